"""What more than one test module uses: ``mlflow_fixtures`` (stores, servers, the CLI),
``pg_fixtures`` (a PostgreSQL cluster, hosts), and the helpers of test files split between
``tests/unit/`` and ``tests/system/`` (``errors``, ``reports``, ``tuning``). Imported as
``support.…`` (``pyproject.toml`` puts ``tests/`` on ``sys.path``).
"""

import pkgutil

import pytest

# the helpers' asserts report the values compared, as the tests' own do
pytest.register_assert_rewrite(*(f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)))
