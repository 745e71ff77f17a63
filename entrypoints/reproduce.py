"""MLproject entry point `reproduce`: `lgals reproduce` with the project's parameters."""

import sys

from lgals.cli import run

if __name__ == "__main__":
    run(["reproduce", *sys.argv[1:]])
