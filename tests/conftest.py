pytest_plugins = [
    "tests.support.pytest_postgres",
    "tests.support.pytest_kube",
    "tests.support.pytest_crds",
    "tests.support.pytest_node",
    "tests.support.pytest_agents",
    "tests.support.pytest_operator_errors",
]

import pytest  # noqa: E402 - after pytest_plugins, which pytest reads first


@pytest.fixture
def engine(pg_url):
    """A SQLAlchemy engine on this test's fresh PostgreSQL database (the
    operator tests' store); a module may override it, e.g. to create the schema."""
    from foundry.db.engine import make_engine

    eng = make_engine(pg_url)
    yield eng
    eng.dispose()
