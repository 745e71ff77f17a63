"""MLproject entry point `train`: `lgals train` with the project's parameters."""

import sys

from lgals.cli import run

if __name__ == "__main__":
    run(["train", *sys.argv[1:]])
