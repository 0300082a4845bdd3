"""The GitHub client against the local GitHub: every operation, pagination, ETags, rate limits, timeouts."""

from __future__ import annotations

from typing import Iterator

import pytest

from foundry.connectors.errors import NotFound, RateLimited, ServerError, Timeout, Unauthorized
from foundry.connectors.github import GitHubClient
from foundry.connectors.retry import RetryPolicy
from foundry.dev.github_server import GitHubServer

REPO = "acme/api"
BRANCH = "foundry/acme-42-a1"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def gh() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_repo(REPO, files={"README.md": "# api\n", "old.py": "x = 1\n", "app.py": "a\nb\n"})
        yield server


def client_for(server: GitHubServer, sleeps: Sleeps | None = None, **kwargs) -> GitHubClient:
    kwargs.setdefault("retry", RetryPolicy(max_attempts=4, base_delay=0.2, max_delay=1.0))
    return GitHubClient(server.token, base_url=server.url, sleep=sleeps if sleeps is not None else Sleeps(), **kwargs)


def open_pr(gh: GitHubServer, files: int = 5) -> tuple[int, str]:
    changes: dict[str, str | None] = {f"src/f{i}.py": f"print({i})\n" for i in range(files)}
    changes["old.py"] = None
    changes["app.py"] = "a\nB\nc\n"
    sha = gh.commit(REPO, BRANCH, changes, "Implement ACME-42")
    return gh.open_pr(REPO, BRANCH, "ACME-42: health endpoint", "Closes ACME-42"), sha


def test_get_pull_reflects_the_pr(gh: GitHubServer) -> None:
    number, sha = open_pr(gh)
    with client_for(gh) as client:
        pr = client.get_pull(REPO, number)
    assert (pr["number"], pr["state"], pr["merged"], pr["title"]) == (number, "open", False, "ACME-42: health endpoint")
    assert (pr["head"]["ref"], pr["head"]["sha"], pr["base"]["ref"]) == (BRANCH, sha, "main")
    assert pr["changed_files"] == 7 and pr["html_url"].endswith(f"/{REPO}/pull/{number}")


def test_list_files_follows_every_page(gh: GitHubServer) -> None:
    number, _ = open_pr(gh, files=5)
    with client_for(gh, per_page=3) as client:
        files = client.list_pull_files(REPO, number)
    assert {f["filename"]: f["status"] for f in files} == {
        **{f"src/f{i}.py": "added" for i in range(5)}, "old.py": "removed", "app.py": "modified"}
    modified = next(f for f in files if f["filename"] == "app.py")
    assert (modified["additions"], modified["deletions"]) == (2, 1)
    assert gh.faults.calls["pulls/list-files"] == 3  # 7 files, 3 per page


def test_checks_status_and_reviews(gh: GitHubServer) -> None:
    number, sha = open_pr(gh)
    gh.set_check(REPO, sha, "success", name="lint")
    gh.set_check(REPO, sha, "failure", name="tests")
    gh.set_status(REPO, sha, "pending", context="ci/legacy")
    gh.set_status(REPO, sha, "success", context="ci/legacy")  # newest per context wins
    gh.submit_review(REPO, number, "carol", "CHANGES_REQUESTED", "add a test")
    gh.submit_review(REPO, number, "bob", "APPROVED")
    with client_for(gh, per_page=1) as client:
        runs = client.list_check_runs(REPO, sha)
        status = client.combined_status(REPO, sha)
        reviews = client.list_reviews(REPO, number)
    assert {(r["name"], r["status"], r["conclusion"]) for r in runs} == {
        ("lint", "completed", "success"), ("tests", "completed", "failure")}
    assert all(r["head_sha"] == sha for r in runs)
    assert status["state"] == "success" and [s["context"] for s in status["statuses"]] == ["ci/legacy"]
    assert [(r["user"]["login"], r["state"]) for r in reviews] == [("carol", "CHANGES_REQUESTED"), ("bob", "APPROVED")]
    assert gh.faults.calls["checks/list-for-ref"] == 2 and gh.faults.calls["pulls/list-reviews"] == 2


def test_find_pull_by_branch_prefers_open_and_sees_closed(gh: GitHubServer) -> None:
    first, _ = open_pr(gh)
    with client_for(gh) as client:
        assert client.find_pull_by_branch(REPO, BRANCH)["number"] == first
        gh.close(REPO, first)
        closed = client.find_pull_by_branch(REPO, BRANCH)
        assert (closed["number"], closed["state"]) == (first, "closed")
        second = gh.open_pr(REPO, BRANCH, "again")
        assert client.find_pull_by_branch(REPO, BRANCH)["number"] == second
        assert client.find_pull_by_branch(REPO, "foundry/other") is None


def test_etag_makes_unchanged_reads_free_and_changes_visible(gh: GitHubServer) -> None:
    number, _ = open_pr(gh)
    with client_for(gh) as client:
        first = client.get_pull(REPO, number)
        spent = gh.rate_remaining
        again = client.get_pull(REPO, number)
        assert again == first and gh.rate_remaining == spent  # 304: no rate limit spent
        assert client.rate_remaining == spent
        new_sha = gh.commit(REPO, BRANCH, {"src/f9.py": "x\n"})
        changed = client.get_pull(REPO, number)
    assert changed["head"]["sha"] == new_sha and gh.rate_remaining == spent - 1
    assert gh.faults.calls["pulls/get"] == 3


def test_server_errors_are_retried_and_counted(gh: GitHubServer) -> None:
    number, _ = open_pr(gh)
    gh.faults.add("pulls/get", "error", count=3)
    sleeps = Sleeps()
    with client_for(gh, sleeps) as client:
        assert client.get_pull(REPO, number)["number"] == number
    assert gh.faults.calls["pulls/get"] == 4 and len(sleeps) == 3
    gh.faults.add("pulls/get", "error", count=4)
    with client_for(gh) as client, pytest.raises(ServerError, match=f"get_pull {REPO}#{number} failed"):
        client.get_pull(REPO, number)


def test_primary_rate_limit_waits_until_reset(gh: GitHubServer) -> None:
    number, _ = open_pr(gh)
    gh.faults.add("pulls/get", "ratelimit", count=1, seconds=5)
    sleeps = Sleeps()
    with client_for(gh, sleeps) as client:
        client.get_pull(REPO, number)
    assert gh.faults.calls["pulls/get"] == 2
    assert sleeps == [pytest.approx(5, abs=1.1)]  # x-ratelimit-reset has whole-second precision


def test_secondary_rate_limit_honours_retry_after(gh: GitHubServer) -> None:
    number, _ = open_pr(gh)
    gh.faults.add("pulls/list-files", "ratelimit_secondary", count=2, seconds=7)
    sleeps = Sleeps()
    with client_for(gh, sleeps) as client:
        assert len(client.list_pull_files(REPO, number)) == 7
    assert sleeps == [7.0, 7.0] and gh.faults.calls["pulls/list-files"] == 3


def test_rate_limit_beyond_the_cap_is_raised(gh: GitHubServer) -> None:
    number, _ = open_pr(gh)
    gh.faults.add("pulls/get", "ratelimit", count=1, seconds=3000)
    with client_for(gh, retry=RetryPolicy(max_rate_limit_wait=60)) as client, pytest.raises(RateLimited) as err:
        client.get_pull(REPO, number)
    assert err.value.status == 403 and err.value.retry_after > 2990


def test_hang_raises_timeout(gh: GitHubServer) -> None:
    number, sha = open_pr(gh)
    gh.faults.add("checks/list-for-ref", "hang", count=1, seconds=1.0)
    with client_for(gh, timeout=0.3, retry=RetryPolicy(max_attempts=1)) as client, pytest.raises(Timeout) as err:
        client.list_check_runs(REPO, sha)
    assert f"list_check_runs {REPO}@{sha[:12]}" in str(err.value)
    gh.faults.add("checks/list-for-ref", "hang", count=1, seconds=1.0)
    with client_for(gh, timeout=0.3) as client:
        assert client.list_check_runs(REPO, sha) == []
    assert gh.faults.calls["checks/list-for-ref"] == 3


def test_not_found_bad_token_and_bad_input(gh: GitHubServer) -> None:
    with client_for(gh) as client:
        with pytest.raises(NotFound, match=f"get_pull {REPO}#99"):
            client.get_pull(REPO, 99)
        with pytest.raises(NotFound):
            client.get_pull("acme/nope", 1)
        with pytest.raises(ValueError, match="owner/name"):
            client.get_pull("not a repo", 1)
        with pytest.raises(ValueError, match="positive integer"):
            client.get_pull(REPO, 0)
        with pytest.raises(ValueError, match="SHA"):
            client.list_check_runs(REPO, "main; rm -rf")
    with GitHubClient("wrong", base_url=gh.url) as bad, pytest.raises(Unauthorized, match="Bad credentials"):
        bad.get_pull(REPO, 1)
