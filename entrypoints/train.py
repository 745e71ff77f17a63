"""MLproject entry point `train`: `lgals train` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(project_argv("train", sys.argv[1:]))
