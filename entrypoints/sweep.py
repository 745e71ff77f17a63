"""MLproject entry point `sweep`: `lgals sweep` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(project_argv("sweep", sys.argv[1:]))
