"""MLproject entry point `evaluate`: `lgals evaluate` with the project's parameters."""

import sys

from lgals.cli import main

if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])
