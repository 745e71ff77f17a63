"""MLproject entry point `evaluate`: `lgals evaluate` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(project_argv("evaluate", sys.argv[1:]))
