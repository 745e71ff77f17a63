"""MLproject entry point `diagnose`: `lgals diagnose` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(project_argv("diagnose", sys.argv[1:]))
