"""One client shared by the operator's handler threads: real threads against the real stand-ins."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from foundry.connectors.github import GitHubClient
from foundry.connectors.linear import LinearClient
from foundry.dev.github_server import GitHubServer
from foundry.dev.linear_server import LinearServer

THREADS = 8


def test_one_linear_client_shared_by_threads() -> None:
    with LinearServer() as linear:
        linear.add_team("ACME")
        issues = [linear.create_issue("ACME", f"Issue {i}") for i in range(THREADS)]
        with LinearClient(linear.api_key, url=linear.graphql_url) as client:
            def work(issue_id: str) -> str:
                for n in range(5):
                    client.create_comment(issue_id, f"note {n}")
                client.set_issue_state(issue_id, "In Progress")
                return client.get_issue(issue_id).state_name

            with ThreadPoolExecutor(THREADS) as pool:
                states = list(pool.map(work, issues))
        assert states == ["In Progress"] * THREADS
        for issue_id in issues:
            assert [c["body"] for c in linear.comments_json(issue_id)] == [f"note {n}" for n in range(5)]
        assert linear.faults.calls["commentCreate"] == 5 * THREADS
        # Each thread may miss the cache before the first answer lands, but never more than once each.
        assert 1 <= linear.faults.calls["workflowStates"] <= THREADS


def test_one_github_client_shared_by_threads_keeps_its_etag_cache_consistent() -> None:
    with GitHubServer() as gh:
        gh.add_repo("acme/api")
        numbers = []
        for i in range(THREADS):
            gh.commit("acme/api", f"b{i}", {f"f{i}.py": "x\n"})
            numbers.append(gh.open_pr("acme/api", f"b{i}", f"PR {i}"))
        with GitHubClient(gh.token, base_url=gh.url) as client:
            def work(number: int) -> list[str]:
                titles = [client.get_pull("acme/api", number)["title"] for _ in range(5)]
                files = client.list_pull_files("acme/api", number)
                return titles + [f["filename"] for f in files]

            with ThreadPoolExecutor(THREADS) as pool:
                results = list(pool.map(work, numbers))
        for i, result in enumerate(results):
            assert result == [f"PR {i}"] * 5 + [f"f{i}.py"]
        # Only each PR's first read costs rate limit; the other four are 304s.
        assert gh.rate_remaining == 5000 - 2 * THREADS
