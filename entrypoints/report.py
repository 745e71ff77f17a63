"""MLproject entry point `report`: `lgals report` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(project_argv("report", sys.argv[1:]))
