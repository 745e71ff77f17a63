"""MLproject entry point `diagnose`: `lgals diagnose` with the project's parameters."""

import sys

from lgals.cli import project_flags, run

if __name__ == "__main__":
    run(["diagnose", *project_flags(sys.argv[1:])])
