"""MLproject entry point `tune`: `lgals tune` with the project's parameters."""

import sys

from lgals.cli import main

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]])
