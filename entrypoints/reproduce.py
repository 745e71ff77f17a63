"""MLproject entry point `reproduce`: `lgals reproduce` with the project's parameters."""

import sys

from lgals.cli import project_argv, run

if __name__ == "__main__":
    run(project_argv("reproduce", sys.argv[1:]))
