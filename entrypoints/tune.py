"""MLproject entry point `tune`: `lgals tune` with the project's parameters."""

import sys

from lgals.cli import project_flags, run

if __name__ == "__main__":
    run(["tune", *project_flags(sys.argv[1:])])
