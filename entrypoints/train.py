"""MLproject entry point `train`: `lgals train` with the project's parameters."""

import sys

from lgals.cli import project_flags, run

if __name__ == "__main__":
    run(["train", *project_flags(sys.argv[1:])])
