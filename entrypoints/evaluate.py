"""MLproject entry point `evaluate`: `lgals evaluate` with the project's parameters."""

import sys

from lgals.cli import run

if __name__ == "__main__":
    run(["evaluate", *sys.argv[1:]])
