"""Comments written once: the hidden marker, and recovery from a crash between post and record."""

from __future__ import annotations

from typing import Iterator

import pytest

from foundry.connectors.marked_comments import find_markers, marker, post_once, with_marker
from foundry.connectors.errors import ServerError
from foundry.connectors.linear import LinearClient
from foundry.connectors.retry import RetryPolicy
from foundry.dev.linear_server import LinearServer

RUN = "acme-42-a1"


@pytest.fixture
def linear() -> Iterator[LinearServer]:
    with LinearServer() as server:
        server.add_team("ACME")
        yield server


@pytest.fixture
def client(linear: LinearServer) -> Iterator[LinearClient]:
    with LinearClient(linear.api_key, url=linear.graphql_url, sleep=lambda s: None,
                      retry=RetryPolicy(max_attempts=3)) as c:
        yield c


class Recorder:
    """Stands in for the run's status.comments: optionally dies before storing (the crash)."""

    def __init__(self, crash_times: int = 0) -> None:
        self.crash_times = crash_times
        self.stored: str | None = None
        self.calls = 0

    def __call__(self, comment_id: str) -> None:
        self.calls += 1
        if self.crash_times:
            self.crash_times -= 1
            raise KeyboardInterrupt("writer killed between post and record")
        self.stored = comment_id


def test_marker_round_trips_and_rejects_bad_input() -> None:
    text = with_marker("Please approve the plan.", RUN, "approval_request")
    assert text.endswith(marker(RUN, "approval_request"))
    assert text.startswith("Please approve the plan.\n\n<!-- foundry:")
    assert find_markers(text) == [(RUN, "approval_request")]
    assert find_markers("no marker <!-- foundry:run=x --> here") == []
    with pytest.raises(ValueError, match="purpose"):
        marker(RUN, "gossip")
    with pytest.raises(ValueError, match="run name"):
        marker("Not A Name", "done")


def test_post_then_recorded_id_short_circuits(linear: LinearServer, client: LinearClient) -> None:
    issue = linear.create_issue("ACME", "Thin ticket")
    rec = Recorder()
    first = post_once(client, issue, RUN, "clarification", "What should happen on error?", None, rec)
    assert rec.stored == first
    calls_before = sum(linear.faults.calls.values())
    again = post_once(client, issue, RUN, "clarification", "What should happen on error?", rec.stored, rec)
    assert again == first
    assert sum(linear.faults.calls.values()) == calls_before  # no API call when the id was recorded
    [comment] = linear.comments_json(issue)
    assert comment["body"] == with_marker("What should happen on error?", RUN, "clarification")


def test_crash_between_post_and_record_then_retry_still_one_comment(linear: LinearServer, client: LinearClient) -> None:
    issue = linear.create_issue("ACME", "Crashy")
    rec = Recorder(crash_times=1)
    with pytest.raises(KeyboardInterrupt):
        post_once(client, issue, RUN, "approval_request", "Plan: ...", None, rec)
    assert rec.stored is None and len(linear.comments_json(issue)) == 1  # posted, not recorded
    # The operator restarts; the run has no recorded id, so post_once runs again.
    comment_id = post_once(client, issue, RUN, "approval_request", "Plan: ...", rec.stored, rec)
    assert rec.stored == comment_id
    comments = linear.comments_json(issue)
    assert [c["id"] for c in comments] == [comment_id]
    assert linear.faults.calls["commentCreate"] == 1


def test_response_lost_after_the_write_does_not_post_twice(linear: LinearServer, client: LinearClient) -> None:
    """The server applies commentCreate and then answers 500: the retry finds the marker."""
    issue = linear.create_issue("ACME", "Lossy")
    linear.faults.add("commentCreate", "apply_then_error", count=1)
    rec = Recorder()
    comment_id = post_once(client, issue, RUN, "pr_opened", "Opened acme/api#7", None, rec)
    assert [c["id"] for c in linear.comments_json(issue)] == [comment_id] == [rec.stored]
    assert linear.faults.calls["commentCreate"] == 1


def test_write_that_never_landed_is_posted_again(linear: LinearServer, client: LinearClient) -> None:
    issue = linear.create_issue("ACME", "Down then up")
    linear.faults.add("commentCreate", "error", count=1)  # 500 without applying
    rec = Recorder()
    comment_id = post_once(client, issue, RUN, "blocked", "Forbidden path touched", None, rec)
    assert [c["id"] for c in linear.comments_json(issue)] == [comment_id]
    assert linear.faults.calls["commentCreate"] == 2


def test_persistent_failure_raises_the_typed_error(linear: LinearServer, client: LinearClient) -> None:
    issue = linear.create_issue("ACME", "Always down")
    linear.faults.add("commentCreate", "error", count=10)
    rec = Recorder()
    with pytest.raises(ServerError, match=f"create_comment {issue}"):
        post_once(client, issue, RUN, "done", "Merged", None, rec, attempts=3)
    assert rec.calls == 0 and linear.comments_json(issue) == []
    assert linear.faults.calls["commentCreate"] == 3


def test_each_purpose_and_run_gets_its_own_comment(linear: LinearServer, client: LinearClient) -> None:
    issue = linear.create_issue("ACME", "Lifecycle")
    linear.add_comment(issue, "/foundry approve")
    ids = {
        post_once(client, issue, RUN, "approval_request", "approve?", None, lambda i: None),
        post_once(client, issue, RUN, "pr_opened", "PR", None, lambda i: None),
        post_once(client, issue, "acme-42-a2", "approval_request", "approve again?", None, lambda i: None),
    }
    # Repeating all three without recorded ids finds them instead of posting.
    for run, purpose in [(RUN, "approval_request"), (RUN, "pr_opened"), ("acme-42-a2", "approval_request")]:
        assert post_once(client, issue, run, purpose, "x", None, lambda i: None) in ids
    assert len(ids) == 3 and len(linear.comments_json(issue)) == 4


def test_a_marker_pasted_by_a_human_does_not_suppress_foundrys_comment(linear: LinearServer, client: LinearClient) -> None:
    issue = linear.create_issue("ACME", "Spoof")
    linear.add_comment(issue, "copied: " + marker(RUN, "approval_request"))
    me = client.viewer_id()
    comment_id = post_once(client, issue, RUN, "approval_request", "approve?", None, lambda i: None, author_id=me)
    assert [c["id"] for c in linear.comments_json(issue)][-1] == comment_id
    assert linear.comments_json(issue)[-1]["userId"] == me == linear.bot
    assert len(linear.comments_json(issue)) == 2
