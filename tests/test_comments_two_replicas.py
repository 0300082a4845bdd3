"""Two operator replicas posting the same comment at the same moment post it once.

post_once's search-then-post survives crashes (the search finds what a crashed
post left), but two replicas that both search before either has posted would
both post. The operator serializes the pair on a PostgreSQL advisory lock per
run and purpose (foundry.db.serial); here two threads, each with its own Linear
client and its own database engine (two replicas), race on the real servers,
with Linear's commentCreate slowed so both searches happen before any post
lands.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

from foundry.connectors.marked_comments import find_markers
from foundry.connectors.linear import LinearClient
from foundry.db.engine import make_engine
from foundry.operator.reconcile import commentio
from foundry.operator.reconcile.view import RunView
from foundry.dev.linear_server import LinearServer


def _run(issue_id: str) -> RunView:
    return RunView({"metadata": {"name": "lin-race-1", "namespace": "ns", "uid": "uid-race-1"},
                    "spec": {"issueId": issue_id, "issueKey": "ACME-1"}, "status": {}})


def test_two_replicas_racing_post_the_comment_once(pg_url):
    with LinearServer() as linear:
        linear.add_team("ACME", "Acme")
        issue = linear.create_issue("ACME", "Add a health endpoint")
        # Each post takes a second: both replicas have searched (and found nothing)
        # before the first post lands, unless one waits for the other.
        linear.faults.add("commentCreate", "hang", count=2, seconds=1.0)
        replicas = [SimpleNamespace(linear=LinearClient(linear.api_key, url=linear.graphql_url),
                                    engine=make_engine(pg_url)) for _ in range(2)]
        start = threading.Barrier(2)
        ids: list[str] = []
        errors: list[BaseException] = []

        def replica(deps: SimpleNamespace) -> None:
            try:
                start.wait()
                ids.append(commentio.post(deps, _run(issue), "approval_request", "Plan: ...")["approval_request"])
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=replica, args=(deps,)) for deps in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        for deps in replicas:
            deps.engine.dispose()
        assert not errors, errors
        posted = linear.comments_json(issue)
        assert len(posted) == 1, [c["body"][:60] for c in posted]
        assert ids == [posted[0]["id"]] * 2  # both replicas record the one comment
        assert ("lin-race-1", "approval_request") in find_markers(posted[0]["body"])
