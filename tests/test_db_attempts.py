"""The pure claim decision and attempt numbering (foundry.domain.attempts)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from foundry.domain.attempts import ClaimAction, PriorRun, decide_claim, next_attempt
from foundry.domain.phases import ACTIVE_PHASES, TERMINAL_PHASES

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_first_claim_creates_attempt_one() -> None:
    assert decide_claim([], T0).action is ClaimAction.CREATE
    assert decide_claim([], T0).attempt == 1


@pytest.mark.parametrize("phase", [p.value for p in ACTIVE_PHASES])
def test_an_active_run_is_attached_even_if_the_ticket_is_newer(phase: str) -> None:
    prior = [PriorRun(1, "Complete", T0), PriorRun(2, phase, T0)]
    decision = decide_claim(prior, T0 + timedelta(days=1))
    assert (decision.action, decision.attempt) == (ClaimAction.ATTACH, 2)


@pytest.mark.parametrize("phase", [p.value for p in TERMINAL_PHASES])
def test_after_a_terminal_run_only_a_newer_ticket_makes_a_new_attempt(phase: str) -> None:
    prior = [PriorRun(1, phase, T0)]
    assert decide_claim(prior, T0) == decide_claim(prior, T0 - timedelta(seconds=1))
    assert decide_claim(prior, T0).action is ClaimAction.UNCHANGED
    assert decide_claim(prior, T0).attempt == 1
    newer = decide_claim(prior, T0 + timedelta(milliseconds=1))
    assert (newer.action, newer.attempt) == (ClaimAction.CREATE, 2)


def test_newness_is_judged_against_the_latest_attempt_not_the_first() -> None:
    prior = [PriorRun(1, "Blocked", T0), PriorRun(2, "Rejected", T0 + timedelta(hours=2))]
    assert decide_claim(prior, T0 + timedelta(hours=1)).action is ClaimAction.UNCHANGED
    assert decide_claim(prior, T0 + timedelta(hours=3)).attempt == 3


def test_offsets_are_compared_as_instants() -> None:
    plus_two = timezone(timedelta(hours=2))
    prior = [PriorRun(1, "Complete", T0)]
    same_instant = T0.astimezone(plus_two)
    assert decide_claim(prior, same_instant).action is ClaimAction.UNCHANGED


def test_naive_times_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="timezone"):
        decide_claim([], datetime(2025, 1, 1))


def test_next_attempt_follows_the_highest_and_never_refills_gaps() -> None:
    assert next_attempt([]) == 1
    assert next_attempt([1, 3]) == 4
