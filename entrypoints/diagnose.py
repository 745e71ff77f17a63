"""MLproject entry point `diagnose`: `lgals diagnose` with the project's parameters."""

import sys

from lgals.cli import run

if __name__ == "__main__":
    run(["diagnose", *sys.argv[1:]])
