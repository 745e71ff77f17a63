"""MLproject entry point `reproduce`: `lgals reproduce` with the project's parameters."""

import sys

from lgals.cli import main

if __name__ == "__main__":
    main(["reproduce", *sys.argv[1:]])
