"""MLproject entry point `tune`: `lgals tune` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(project_argv("tune", sys.argv[1:]))
