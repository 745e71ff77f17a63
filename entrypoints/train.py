"""MLproject entry point `train`: `lgals train` with the project's parameters."""

import sys

from lgals.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
