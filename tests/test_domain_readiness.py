"""Readiness: a description and acceptance criteria, else questions for what is missing."""

from __future__ import annotations

import pytest

from foundry.domain.readiness import acceptance_criteria, assess

DESC = "The checkout page shows the wrong total when a coupon is applied twice in one session."


def test_ready_ticket_with_heading_and_bullets():
    r = assess({"title": "Fix coupon total", "description": f"{DESC}\n\n## Acceptance criteria\n- Total is right\n- A test covers it\n"})
    assert r.ready and r.missing == () and r.questions == ()
    assert r.acceptance_criteria == ("Total is right", "A test covers it")


@pytest.mark.parametrize("block, expected", [
    ("**Acceptance criteria:**\n1. One\n2) Two", ("One", "Two")),
    ("Definition of done\n* [ ] One\n* [x] Two", ("One", "Two")),
    ("- [ ] One\n- [ ] Two", ("One", "Two")),
    ("Given a cart When I pay Then I see a receipt", ("Given a cart When I pay Then I see a receipt",)),
    ("AC: the page loads in under a second", ("the page loads in under a second",)),
    ("### AC\nThe page loads fast\n### Notes\n- not a criterion", ("The page loads fast",)),
])
def test_acceptance_criteria_forms(block, expected):
    assert acceptance_criteria(f"{DESC}\n\n{block}") == expected


def test_missing_everything_asks_two_questions():
    r = assess({"title": "Fix it", "description": ""})
    assert not r.ready
    assert r.missing == ("description", "acceptance_criteria")
    assert len(r.questions) == 2
    assert "Fix it" in r.questions[0] and "Acceptance criteria" in r.questions[1]


def test_criteria_alone_are_not_a_description():
    r = assess({"title": "x", "description": "## Acceptance criteria\n- it works\n- it is fast and small and good"})
    assert r.missing == ("description",)
    assert len(r.questions) == 1


def test_description_without_criteria_asks_for_criteria_only():
    r = assess({"title": "x", "description": DESC})
    assert r.missing == ("acceptance_criteria",) and len(r.questions) == 1


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="ticket must be a mapping"):
        assess("not a ticket")  # type: ignore[arg-type]
    assert not assess({"title": None, "description": 42}).ready  # wrong types read as missing, not a crash


def test_same_ticket_same_questions():
    t = {"title": "A", "description": "short"}
    assert assess(t) == assess(dict(t))
