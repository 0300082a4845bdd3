pytest_plugins = [
    "foundry.testing.pytest_postgres",
    "foundry.testing.pytest_kube",
    "foundry.testing.pytest_crds",
    "foundry.testing.pytest_node",
    "foundry.testing.pytest_agents",
    "foundry.testing.pytest_operator_errors",
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
