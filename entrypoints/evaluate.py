"""MLproject entry point `evaluate`: `lgals evaluate` with the project's parameters."""

import sys

from lgals.cli import project_flags, run

if __name__ == "__main__":
    run(["evaluate", *project_flags(sys.argv[1:])])
