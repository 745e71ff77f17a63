"""MLproject entry point `sweep`: `lgals sweep` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(["sweep", *project_argv(sys.argv[1:])])
