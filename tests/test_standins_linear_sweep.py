"""The Linear stand-in's answers to what the sweep asks: filtered, ordered, paginated issues and
comments, an issue's history, and Linear's rate-limit budgets and refusals, over real HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from foundry.connectors.errors import RateLimited
from foundry.connectors.linear import LinearClient
from foundry.connectors.retry import RetryPolicy
from foundry.dev.linear_ratelimit import RateLimits
from foundry.dev.linear_server import LinearServer

ISSUES = """
query Q($filter: IssueFilter, $first: Int, $after: String) {
  issues(filter: $filter, first: $first, after: $after, orderBy: updatedAt) {
    nodes { id updatedAt labels { nodes { name } } state { type } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


def _client(linear: LinearServer) -> LinearClient:
    return LinearClient(linear.api_key, url=linear.graphql_url, retry=RetryPolicy(max_attempts=1))


def test_issues_are_filtered_ordered_by_update_and_paginated() -> None:
    with LinearServer() as linear:
        linear.add_team("ACME")
        labelled = [linear.create_issue("ACME", f"Issue {n}", labels=["Foundry"]) for n in range(5)]
        linear.create_issue("ACME", "Unlabelled")
        done = linear.create_issue("ACME", "Finished", labels=["foundry"], state="Done")
        time.sleep(0.01)
        linear.update_issue(labelled[0], description="edited")  # now the most recently updated
        flt = {"labels": {"some": {"name": {"eqIgnoreCase": "foundry"}}},
               "state": {"type": {"nin": ["completed", "canceled"]}}}
        with _client(linear) as client:
            seen, after, pages = [], None, 0
            while True:
                page = client.query("q", "issues", ISSUES, {"filter": flt, "first": 2, "after": after})["issues"]
                pages += 1
                seen += page["nodes"]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["pageInfo"]["endCursor"]
            assert pages == 3 and [n["id"] for n in seen][0] == labelled[0]
            assert sorted(n["id"] for n in seen) == sorted(labelled) and done not in [n["id"] for n in seen]
            stamps = [n["updatedAt"] for n in seen]
            assert stamps == sorted(stamps, reverse=True)
            since = {"updatedAt": {"gte": linear.issue_json(labelled[0])["updatedAt"]}, **flt}
            recent = client.query("q", "issues", ISSUES, {"filter": since})["issues"]["nodes"]
            assert [n["id"] for n in recent] == [labelled[0]]
            with pytest.raises(Exception, match="ISO-8601"):
                client.query("q", "issues", ISSUES, {"filter": {"updatedAt": {"gte": "yesterday"}}})


def test_comments_by_issue_body_and_time_and_an_issues_history() -> None:
    with LinearServer() as linear:
        linear.add_team("ACME")
        a, b = linear.create_issue("ACME", "A"), linear.create_issue("ACME", "B")
        linear.add_comment(a, "/foundry approve")
        linear.add_comment(a, "thanks")
        linear.add_comment(b, "/FOUNDRY stop")
        other = linear.create_issue("ACME", "C")
        linear.add_comment(other, "/foundry approve")
        linear.update_issue(a, state="In Progress")
        linear.update_issue(a, description="more", labels=["foundry"])
        query = """query C($f: CommentFilter) { comments(filter: $f, first: 10) {
                     nodes { body issue { id } user { email } } pageInfo { hasNextPage endCursor } } }"""
        history = """query H($id: String!) { issue(id: $id) { history(first: 10) { nodes {
                       fromStateId toStateId updatedDescription addedLabelIds removedLabelIds actor { id } } } } }"""
        with _client(linear) as client:
            flt = {"issue": {"id": {"in": [a, b]}}, "body": {"containsIgnoreCase": "/foundry"}}
            found = client.query("c", "comments", query, {"f": flt})["comments"]["nodes"]
            assert sorted(n["body"] for n in found) == ["/FOUNDRY stop", "/foundry approve"]
            assert {n["issue"]["id"] for n in found} == {a, b}
            entries = client.query("h", a, history, {"id": a})["issue"]["history"]["nodes"]
        newest, oldest = entries  # newest first
        assert oldest["fromStateId"] and oldest["toStateId"] and not oldest["updatedDescription"]
        assert newest["updatedDescription"] and newest["addedLabelIds"] and newest["fromStateId"] is None


def test_rate_limits_follow_linears_buckets_headers_and_refusal() -> None:
    limits = RateLimits(requests=2, complexity=10_000, period=60.0)
    with LinearServer(rate_limits=limits) as linear:
        linear.add_team("ACME")
        body = {"query": ISSUES, "variables": {"first": 10}}
        headers = {"Authorization": linear.api_key}
        first = httpx.post(linear.graphql_url, json=body, headers=headers)
        assert first.status_code == 200
        # issues: 1 + 10 x (nodes 1 + id, updatedAt 0.2 + labels (1 + 50 x (nodes 1 + name 0.1))
        #                    + state (1 + type 0.1) + pageInfo (1 + 0.2)) = 1 + 10 x 59.5 = 596
        assert first.headers["X-Complexity"] == "596"
        assert first.headers["X-RateLimit-Requests-Remaining"] == "1"
        assert int(first.headers["X-RateLimit-Complexity-Remaining"]) == 10_000 - 596
        assert int(first.headers["X-RateLimit-Requests-Reset"]) > time.time() * 1000
        httpx.post(linear.graphql_url, json=body, headers=headers)
        refused = httpx.post(linear.graphql_url, json=body, headers=headers)
        # As Linear answers: HTTP 400, code RATELIMITED, the 429 inside the error.
        assert refused.status_code == 400
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "RATELIMITED" and error["extensions"]["statusCode"] == 429
        assert refused.headers["X-RateLimit-Requests-Remaining"] == "0"
        with _client(linear) as client:
            with pytest.raises(RateLimited) as caught:
                client.query("q", "issues", ISSUES, {"first": 10})
        assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60
        assert limits.refused == 2
