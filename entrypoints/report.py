"""MLproject entry point `report`: `lgals report` with the project's parameters."""

import sys

from lgals.cli import run

if __name__ == "__main__":
    run(["report", *sys.argv[1:]])
