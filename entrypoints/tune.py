"""MLproject entry point `tune`: `lgals tune` with the project's parameters."""

import sys

from lgals.cli import run

if __name__ == "__main__":
    run(["tune", *sys.argv[1:]])
