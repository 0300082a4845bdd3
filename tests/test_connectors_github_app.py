"""Foundry's GitHub App client against the local GitHub: the JWT it signs, the runner's
repo-scoped token, the operator's cached token refreshed before expiry (and after a
401), configuration, and the client's PR writes and feedback reads."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import jwt
import pytest

from foundry.config import ConfigError, parse_config
from foundry.connectors.errors import BadResponse, NotFound, Unauthorized
from foundry.connectors.github import GitHubClient, PullRequestExists
from foundry.connectors.github_app import (
    AppKeyError, GitHubApp, RUNNER_PERMISSIONS, app_from_settings, app_jwt, load_private_key, token_source,
)
from foundry.connectors.retry import RetryPolicy
from foundry.dev.github_auth import generate_app_key
from foundry.dev.github_server import GitHubServer

REPO, OTHER = "acme/api", "acme/web"
APP_ID, INSTALLATION = 31337, 9001
FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)


@pytest.fixture(scope="module")
def key() -> tuple[str, str]:
    return generate_app_key()


@pytest.fixture
def gh(key: tuple[str, str]) -> Iterator[GitHubServer]:
    with GitHubServer(require_auth=True) as server:
        server.add_repo(REPO, files={"app.py": "x = 1\n"})
        server.add_repo(OTHER)
        server.install_app(app_id=APP_ID, public_key_pem=key[1], installation_id=INSTALLATION, account="acme")
        yield server


def app_for(gh: GitHubServer, key: tuple[str, str], **kwargs) -> GitHubApp:
    kwargs.setdefault("retry", FAST)
    return GitHubApp(APP_ID, INSTALLATION, key[0], base_url=gh.url, **kwargs)


def push_with(gh: GitHubServer, token: str, repo: str, branch: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Clone `repo` anew with the token, commit one file and push it to `branch`."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0", "TOKEN": token,
           "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@x"}
    helper = ["-c", "credential.helper=!f() { echo username=x-access-token; echo \"password=$TOKEN\"; }; f"]
    work = tmp_path / f"w-{repo.replace('/', '-')}-{time.monotonic_ns()}"

    def git(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *helper, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)

    done = git("clone", "--quiet", gh.git_url(repo), str(work))
    if done.returncode != 0:
        return done
    (work / "change.txt").write_text(branch + "\n")
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "change", cwd=work)
    return git("push", "origin", f"HEAD:refs/heads/{branch}", cwd=work)


def test_the_jwt_follows_githubs_rules(key: tuple[str, str]) -> None:
    now = 1_800_000_000
    token = app_jwt(APP_ID, load_private_key(key[0], source="test"), now=now)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(token, key[1], algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims == {"iat": now - 60, "exp": now + 540, "iss": str(APP_ID)}
    assert claims["exp"] - claims["iat"] <= 600


def test_runner_token_is_one_repository_with_two_permissions(gh: GitHubServer, key: tuple[str, str],
                                                             tmp_path: Path) -> None:
    with app_for(gh, key) as app:
        minted = app.runner_token(REPO)
    assert minted.repositories == (REPO,)
    assert dict(minted.permissions) == {**RUNNER_PERMISSIONS, "metadata": "read"}
    assert minted.token not in repr(minted) and "expires_at" in repr(minted)
    assert 3500 < minted.expires_at - time.time() <= 3600
    held = gh.token_info(minted.token)
    assert held is not None and held.repositories == frozenset({REPO}) and held.login == "foundry[bot]"
    [seen] = gh.tokens.apps[INSTALLATION].jwts_seen
    assert seen["iss"] == str(APP_ID) and seen["exp"] - seen["iat"] == 600

    # The token for repo A pushes to A and not to B, and reads nothing it was not given.
    assert push_with(gh, minted.token, REPO, "foundry/run-a", tmp_path).returncode == 0
    refused = push_with(gh, minted.token, OTHER, "foundry/run-a", tmp_path)
    assert refused.returncode != 0 and "Repository not found" in refused.stderr
    assert "foundry/run-a" in gh.repos[REPO].branches and "foundry/run-a" not in gh.repos[OTHER].branches
    with GitHubClient(minted.token, base_url=gh.url, retry=FAST) as client, pytest.raises(Unauthorized):
        client.list_check_runs(REPO, gh.branch_sha(REPO, "main"))


def test_operator_token_is_cached_shared_and_refreshed_before_expiry(gh: GitHubServer, key: tuple[str, str]) -> None:
    gh.token_lifetime = 2.0
    app = app_for(gh, key, refresh_margin=300)
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        tokens.append(app.operator_token())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 1 and app.minted == 1  # eight threads at once, one token minted
    first = tokens[0]
    held = gh.token_info(first)
    assert held is not None and held.permissions == {
        "contents": "read", "pull_requests": "write", "checks": "read", "statuses": "read", "metadata": "read"}

    gh.create_branch(REPO, "feature")
    number = gh.open_pr(REPO, "feature", "PR")
    with GitHubClient(token_source(app), base_url=gh.url, retry=FAST) as client:
        assert client.get_pull(REPO, number)["number"] == number
        time.sleep(2.2)  # past the first token's expiry: the stand-in refuses it now
        assert gh.tokens.get(first).expired(time.time())
        assert client.get_pull(REPO, number)["number"] == number
        assert app.minted == 2 and app.operator_token() != first

        # A token GitHub stops accepting early (revoked) is dropped and replaced once.
        gh.token_lifetime = 3600.0
        gh.revoke_token(app.operator_token())
        assert client.list_check_runs(REPO, gh.branch_sha(REPO, "main")) == []
        assert app.minted == 3
    app.close()


def test_refused_jwts_and_requests_say_why(gh: GitHubServer, key: tuple[str, str]) -> None:
    stranger, _ = generate_app_key()
    with GitHubApp(APP_ID, INSTALLATION, stranger, base_url=gh.url, retry=FAST) as wrong_key, \
            pytest.raises(Unauthorized, match="signature"):
        wrong_key.runner_token(REPO)
    with GitHubApp(APP_ID, INSTALLATION + 1, key[0], base_url=gh.url, retry=FAST) as wrong_installation, \
            pytest.raises(NotFound, match="installation"):
        wrong_installation.runner_token(REPO)
    skewed = time.time() - 900  # a clock 15 minutes slow signs a JWT that expired already
    with app_for(gh, key, clock=lambda: skewed) as late, pytest.raises(Unauthorized, match="exp"):
        late.runner_token(REPO)
    with app_for(gh, key) as app:
        with pytest.raises(BadResponse, match="not granted") as err:
            app.mint(repositories=[REPO], permissions={"administration": "write"})
        assert err.value.status == 422
        with pytest.raises(BadResponse, match="not accessible"):
            app.runner_token("acme/nope")
        with pytest.raises(ValueError, match="one owner"):
            app.mint(repositories=[REPO, "other/x"])
    with pytest.raises(AppKeyError, match="PEM"):
        GitHubApp(APP_ID, INSTALLATION, "not a key", base_url=gh.url)


def test_tokens_never_reach_the_logs(gh: GitHubServer, key: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with app_for(gh, key) as app:
        minted = app.runner_token(REPO)
        operator = app.operator_token()
        with GitHubClient(token_source(app), base_url=gh.url) as client:
            client.find_pull_by_branch(REPO, "main")
    assert caplog.records  # httpx did log its requests
    assert minted.token not in caplog.text and operator not in caplog.text
    assert minted.token not in str(minted) and app.jwt() not in caplog.text


def test_settings_choose_the_app_or_the_static_token(gh: GitHubServer, key: tuple[str, str], tmp_path: Path) -> None:
    pem = tmp_path / "app.pem"
    pem.write_text(key[0])
    cfg = parse_config({"github": {"api_url": gh.url, "app_id": APP_ID, "installation_id": INSTALLATION,
                                   "private_key_file": str(pem)}})
    assert cfg.github.uses_app
    with app_from_settings(cfg.github) as app:
        assert app.runner_token(REPO).repositories == (REPO,)
    by_env = parse_config({"github": {"api_url": gh.url, "app_id": APP_ID, "installation_id": INSTALLATION,
                                      "private_key_env": "APP_KEY"}})
    with app_from_settings(by_env.github, env={"APP_KEY": key[0]}) as app:
        assert app.operator_token()
    with pytest.raises(AppKeyError, match="APP_KEY is not set"):
        app_from_settings(by_env.github, env={})
    missing = parse_config({"github": {"app_id": 1, "installation_id": 2, "private_key_file": str(tmp_path / "no")}})
    with pytest.raises(AppKeyError, match="cannot read"):
        app_from_settings(missing.github)
    assert app_from_settings(parse_config({"github": {"api_url": gh.url}}).github) is None  # the static token
    with pytest.raises(ConfigError, match="installation_id"):
        parse_config({"github": {"app_id": 1, "private_key_env": "K"}})


def test_client_opens_updates_and_reads_feedback(gh: GitHubServer, key: tuple[str, str]) -> None:
    sha = gh.commit(REPO, "foundry/run-1", {"app.py": "x = 2\n"})
    with app_for(gh, key) as app, GitHubClient(app.runner_token(REPO).token, base_url=gh.url, retry=FAST) as runner:
        pr, created = runner.open_or_update_pull(REPO, head="foundry/run-1", base="main", title="ACME-1: two",
                                                 body="plan")
        assert created and pr["draft"] is True and pr["user"]["login"] == "foundry[bot]"
        with pytest.raises(PullRequestExists, match="already exists"):
            runner.create_pull(REPO, head="foundry/run-1", base="main", title="again")
        again, created = runner.open_or_update_pull(REPO, head="foundry/run-1", base="main", title="ACME-1: two",
                                                    body="plan, attempt 2")
        assert not created and again["number"] == pr["number"] and again["body"] == "plan, attempt 2"
        assert len(gh.pulls) == 1
        assert runner.update_pull(REPO, pr["number"], state="closed")["state"] == "closed"
        assert runner.update_pull(REPO, pr["number"], state="open")["state"] == "open"

    number = pr["number"]
    run_id = gh.set_check(REPO, sha, "failure", name="tests", output={"title": "failed", "summary": "s", "text": "t"},
                          annotations=[{"path": "app.py", "start_line": 1, "annotation_level": "failure",
                                        "message": "x must be 1"}])
    review = gh.submit_review(REPO, number, "carol", "CHANGES_REQUESTED", "no",
                              comments=[{"path": "app.py", "line": 1, "body": "keep x = 1"}])
    gh.add_review_comment(REPO, number, "bob", "app.py", 1, "agreed")
    with GitHubClient(token_source(app_for(gh, key)), base_url=gh.url, retry=FAST, per_page=1) as operator:
        [run] = operator.list_check_runs(REPO, sha)
        assert run["output"]["summary"] == "s" and run["output"]["annotations_count"] == 1
        assert operator.get_check_run(REPO, run_id)["output"]["title"] == "failed"
        [note] = operator.list_check_run_annotations(REPO, run_id)
        assert (note["path"], note["start_line"], note["message"]) == ("app.py", 1, "x must be 1")
        comments = operator.list_review_comments(REPO, number)  # two pages of one
        assert [(c["user"]["login"], c["pull_request_review_id"]) for c in comments] == [("carol", review), ("bob", None)]
        assert [c["body"] for c in operator.list_comments_for_review(REPO, number, review)] == ["keep x = 1"]
        # The operator's token edits a PR (its body's Plan drift section); contents stay read-only for it
        # (the permissions asserted where its token is minted, above).
        assert operator.update_pull(REPO, number, body="edited")["body"] == "edited"
    with pytest.raises(ValueError, match="check run id"):
        GitHubClient("t", base_url=gh.url).list_check_run_annotations(REPO, 0)
