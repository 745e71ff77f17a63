"""MLproject entry point `report`: `lgals report` with the project's parameters."""

import sys

from lgals.cli import main

if __name__ == "__main__":
    main(["report", *sys.argv[1:]])
