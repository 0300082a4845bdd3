"""Which requirements an extra adds, read from Requires-Dist lines (foundry.cli.extras)."""

from __future__ import annotations

from foundry.cli.extras import extra_requirements, missing_for

REQUIRES = [
    "kopf>=1.38",
    "graphql-core<3.4,>=3.2; extra == 'dev'",
    "cryptography>=42; extra == \"dev\"",
    "graphql-core<3.4,>=3.2; extra == 'test'",
    "pytest>=8; extra == 'test'",
    "tomli; python_version < '3.11' and extra == 'dev'",
    "devtools; extra == 'devel'",
]


def test_only_the_lines_marked_with_the_extra_count():
    assert extra_requirements(REQUIRES, "dev") == ["graphql-core", "cryptography", "tomli"]
    assert extra_requirements(REQUIRES, "test") == ["graphql-core", "pytest"]
    assert extra_requirements(REQUIRES, "docs") == []


def test_a_distribution_that_is_not_installed_has_nothing_to_compare():
    assert missing_for("dev", dist="no-such-distribution-here") == []
