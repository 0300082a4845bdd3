"""The GitHub stand-in's git side and App flow, with the real git client against the real
`git http-backend`: clone, push, read back; force-pushes refused and recorded; tokens
refused the way GitHub refuses them; App JWTs verified; PR writes, check output,
annotations, review comments and renames as GitHub reports them."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import jwt
import pytest

from foundry.dev.github_auth import generate_app_key
from foundry.dev.github_server import GitHubServer
from tests.support.webhook_receiver import WebhookReceiver
from test_standins_github import octokit_examples, shape_mismatches  # noqa: F401 (a fixture)

REPO, OTHER = "acme/api", "acme/web"
APP_ID, INSTALLATION = 4242, 777
STATIC = "ghp_static_test_token_for_tests"

if shutil.which("git") is None or not Path("/usr/lib/git-core/git-http-backend").exists():
    raise RuntimeError("these tests need git and git-http-backend: apt-get install git")


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    return generate_app_key()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def gh(hook: WebhookReceiver, app_key: tuple[str, str]) -> Iterator[GitHubServer]:
    with GitHubServer(require_auth=True, webhook_url=hook.url, retry_scale=0.0001) as server:
        server.add_repo(REPO, files={"README.md": "# api\n", "src/app.py": "def main():\n    return 1\n"})
        server.add_repo(OTHER, files={"README.md": "# web\n"})
        server.register_token(STATIC, login="dev")
        server.install_app(app_id=APP_ID, public_key_pem=app_key[1], installation_id=INSTALLATION, account="acme")
        yield server
        assert server.git_errors == []  # http-backend never failed underneath


class Git:
    """The git client, with no machine or user config, authenticating with `token` (if any)
    through a credential helper, the way the runner does (never in the URL)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def env(self) -> dict[str, str]:
        env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
               "GIT_AUTHOR_NAME": "Tester", "GIT_AUTHOR_EMAIL": "t@example.com",
               "GIT_COMMITTER_NAME": "Tester", "GIT_COMMITTER_EMAIL": "t@example.com"}
        if self.token is not None:
            env["TEST_TOKEN"] = self.token
        return env

    def __call__(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
        helper = ["-c", "credential.helper=",
                  "-c", "credential.helper=!f() { echo username=x-access-token; echo \"password=$TEST_TOKEN\"; }; f"]
        argv = ["git", *(helper if self.token is not None else []), *args]
        done = subprocess.run(argv, cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
        return done


def clone(git: Git, gh: GitHubServer, repo: str, into: Path, *extra: str) -> Path:
    git("clone", "--quiet", *extra, gh.git_url(repo), str(into))
    return into


def commit_file(git: Git, work: Path, path: str, content: str, message: str) -> str:
    (work / path).parent.mkdir(parents=True, exist_ok=True)
    (work / path).write_text(content)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", message, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).stdout.strip()


def events(hook: WebhookReceiver, gh: GitHubServer) -> list[tuple[str, dict[str, Any]]]:
    """The webhooks the stand-in sent, in the order it sent them (each delivery is its own
    request, so arrival order can differ), after checking each one arrived."""
    sent = [(d.event, d.payload) for d in gh.deliveries]
    arrived = sorted(json.dumps(json.loads(m.body), sort_keys=True) for m in hook.received)
    assert sorted(json.dumps(b, sort_keys=True) for _, b in sent) == arrived
    return sent


def app_jwt(private_pem: str, *, iat: float | None = None, exp: float | None = None, iss: Any = APP_ID,
            alg: str = "RS256", key: Any = None) -> str:
    now = time.time()
    claims = {"iat": int(now - 60 if iat is None else iat), "exp": int(now + 540 if exp is None else exp),
              "iss": str(iss)}
    return jwt.encode(claims, key if key is not None else private_pem, algorithm=alg)


def mint(gh: GitHubServer, token_jwt: str, body: dict[str, Any] | None = None,
         installation: int = INSTALLATION) -> httpx.Response:
    return httpx.post(f"{gh.url}/app/installations/{installation}/access_tokens", json=body or {},
                      headers={"Authorization": f"Bearer {token_jwt}", "Accept": "application/vnd.github+json"})


def rest(gh: GitHubServer, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{gh.url}{path}", headers={"Authorization": f"Bearer {token}"}, **kwargs)


# -- clone, push, read back ------------------------------------------------------------


def test_clone_push_and_read_back_with_real_git(gh: GitHubServer, hook: WebhookReceiver, tmp_path: Path) -> None:
    git = Git(STATIC)
    work = clone(git, gh, REPO, tmp_path / "work")
    assert (work / "src/app.py").read_text() == "def main():\n    return 1\n"
    git("checkout", "--quiet", "-b", "foundry/run-1", cwd=work)
    first = commit_file(git, work, "src/app.py", "def main():\n    return 2\n", "Return two")
    git("push", "--quiet", "origin", "foundry/run-1", cwd=work)
    # When git push returns, the model already knows the branch, the commit and its files.
    assert gh.branch_sha(REPO, "foundry/run-1") == first
    assert gh.files_at(REPO, "foundry/run-1")["src/app.py"] == "def main():\n    return 2\n"
    assert gh.commits[first].author == "Tester" and gh.commits[first].message.startswith("Return two")

    number = gh.open_pr(REPO, "foundry/run-1", "Return two")
    second = commit_file(git, work, "NOTES.md", "notes\n", "Add notes")
    git("push", "--quiet", "origin", "foundry/run-1", cwd=work)
    assert gh.pulls[(REPO, number)].head_sha == second

    # A fresh clone reads back exactly what was pushed.
    again = clone(Git(STATIC), gh, REPO, tmp_path / "again", "--branch", "foundry/run-1")
    assert Git(None)("rev-parse", "HEAD", cwd=again).stdout.strip() == second
    assert (again / "NOTES.md").read_text() == "notes\n"
    assert subprocess.run(["git", f"--git-dir={gh.git_root / 'acme/api.git'}", "fsck", "--strict"],
                          capture_output=True).returncode == 0

    assert gh.wait_webhooks(10) and hook.wait_for(4)
    seen = events(hook, gh)
    pushes = [b for e, b in seen if e == "push"]
    assert [(p["ref"], p["before"] == "0" * 40, p["after"], p["forced"]) for p in pushes] == [
        ("refs/heads/foundry/run-1", True, first, False), ("refs/heads/foundry/run-1", False, second, False)]
    assert pushes[1]["commits"][0]["added"] == ["NOTES.md"] and pushes[0]["pusher"]["name"] == "dev"
    sync = [b for e, b in seen if e == "pull_request" and b["action"] == "synchronize"]
    assert [(s["before"], s["after"], s["pull_request"]["head"]["sha"]) for s in sync] == [(first, second, second)]
    updates = [(u.ref, u.new, u.accepted, u.forced, u.via, u.actor) for u in gh.ref_updates_for(REPO, "foundry/run-1")]
    assert updates == [("refs/heads/foundry/run-1", first, True, False, "git", "dev"),
                       ("refs/heads/foundry/run-1", second, True, False, "git", "dev")]


def test_control_api_commits_are_real_git_commits(gh: GitHubServer, tmp_path: Path) -> None:
    sha = gh.commit(REPO, "feature", {"src/app.py": None, "docs/guide.md": "# guide\n"}, "Move things")
    number = gh.open_pr(REPO, "feature", "Guide")
    merge = gh.merge(REPO, number, method="merge")
    work = clone(Git(STATIC), gh, REPO, tmp_path / "work")
    g = Git(None)
    assert g("rev-parse", "HEAD", cwd=work).stdout.strip() == merge
    assert g("rev-parse", "HEAD^1", "HEAD^2", cwd=work).stdout.split()[1] == sha  # a two-parent merge
    assert (work / "docs/guide.md").read_text() == "# guide\n" and not (work / "src/app.py").exists()
    assert g("log", "-1", "--format=%an %s", sha, cwd=work).stdout.strip() == "foundry-agent Move things"
    assert subprocess.run(["git", f"--git-dir={gh.git_root / 'acme/api.git'}", "fsck", "--strict"],
                          capture_output=True, text=True).stdout == ""
    assert gh.commits[merge].tree_sha == g("rev-parse", "HEAD^{tree}", cwd=work).stdout.strip()
    main = gh.ref_updates_for(REPO, "main")
    assert [(u.via, u.new, u.forced) for u in main][-1] == ("control", merge, False)

    # A squash merge (the default) adds one single-parent commit: the branch's commits stay off main.
    gh.commit(REPO, "feature-2", {"docs/more.md": "more\n"}, "More")
    squashed = gh.merge(REPO, gh.open_pr(REPO, "feature-2", "More docs"))
    Git(STATIC)("fetch", "--quiet", "origin", cwd=work)
    assert g("log", "--format=%s", "origin/main..origin/feature-2", cwd=work).stdout.split("\n")[0] == "More"
    assert g("rev-list", "--parents", "-1", squashed, cwd=work).stdout.split()[1:] == [merge]
    assert gh.files_at(REPO, "main")["docs/more.md"] == "more\n"


def test_force_push_is_refused_and_recorded(gh: GitHubServer, tmp_path: Path) -> None:
    git = Git(STATIC)
    work = clone(git, gh, REPO, tmp_path / "work")
    git("checkout", "--quiet", "-b", "foundry/run-2", cwd=work)
    pushed = commit_file(git, work, "a.txt", "1\n", "One")
    git("push", "--quiet", "origin", "foundry/run-2", cwd=work)
    git("commit", "--quiet", "--amend", "-m", "Rewritten", cwd=work)
    rewritten = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    refused = git("push", "--force", "origin", "foundry/run-2", cwd=work, check=False)
    assert refused.returncode != 0 and "non-fast-forward" in refused.stderr
    assert gh.branch_sha(REPO, "foundry/run-2") == pushed
    last = gh.ref_updates_for(REPO, "foundry/run-2")[-1]
    assert (last.old, last.new, last.forced, last.accepted, last.reason) == (
        pushed, rewritten, True, False, "non-fast-forward")

    # A protected branch refuses even a fast-forward; nothing reaches main.
    gh.protect_branch(REPO, "main")
    before = gh.branch_sha(REPO, "main")
    git("checkout", "--quiet", "main", cwd=work)
    commit_file(git, work, "b.txt", "2\n", "Straight to main")
    refused = git("push", "origin", "main", cwd=work, check=False)
    assert refused.returncode != 0 and "Protected branch" in refused.stderr
    assert gh.branch_sha(REPO, "main") == before
    assert not [u for u in gh.ref_updates_for(REPO, "main") if u.via == "git" and u.accepted]
    assert [u.reason for u in gh.ref_updates_for(REPO, "main") if u.via == "git"] == ["protected"]


# -- tokens on git and REST ----------------------------------------------------------------


def test_git_refuses_missing_wrong_expired_and_other_repo_tokens(gh: GitHubServer, tmp_path: Path) -> None:
    anonymous = Git(None)("clone", gh.git_url(REPO), str(tmp_path / "anon"), check=False)
    assert anonymous.returncode != 0 and "could not read Username" in anonymous.stderr  # git was challenged
    challenge = httpx.get(f"{gh.git_url(REPO)}/info/refs?service=git-upload-pack")
    assert challenge.status_code == 401 and challenge.headers["WWW-Authenticate"].startswith("Basic")

    wrong = Git("ghp_not_a_token")("clone", gh.git_url(REPO), str(tmp_path / "wrong"), check=False)
    assert wrong.returncode != 0 and "Authentication failed" in wrong.stderr
    assert "Invalid username or token" in wrong.stderr

    gh.register_token("ghp_expiring", login="dev", expires_in=60)
    clone(Git("ghp_expiring"), gh, REPO, tmp_path / "fine")
    gh.expire_token("ghp_expiring")
    expired = Git("ghp_expiring")("clone", gh.git_url(REPO), str(tmp_path / "expired"), check=False)
    assert expired.returncode != 0 and "Authentication failed" in expired.stderr

    gh.register_token("ghp_web_only", login="dev", repositories=[OTHER])
    other = Git("ghp_web_only")("clone", gh.git_url(REPO), str(tmp_path / "other"), check=False)
    assert other.returncode != 0 and "Repository not found" in other.stderr and "not found" in other.stderr

    gh.register_token("ghp_read_only", login="reader", permissions={"contents": "read"})
    work = clone(Git("ghp_read_only"), gh, REPO, tmp_path / "ro")
    commit_file(Git("ghp_read_only"), work, "x.txt", "x\n", "X")
    push = Git("ghp_read_only")("push", "origin", "HEAD:refs/heads/x", cwd=work, check=False)
    assert push.returncode != 0 and "Permission to acme/api.git denied to reader" in push.stderr
    assert "403" in push.stderr
    assert "x" not in gh.repos[REPO].branches and not gh.ref_updates_for(REPO, "x")


def test_git_faults_fail_the_push_and_leave_the_branch(gh: GitHubServer, tmp_path: Path) -> None:
    git = Git(STATIC)
    work = clone(git, gh, REPO, tmp_path / "w")
    commit_file(git, work, "f.txt", "f\n", "F")
    gh.faults.add("git/git-receive-pack", "error")
    failed = git("push", "origin", "HEAD:refs/heads/faulty", cwd=work, check=False)
    assert failed.returncode != 0 and "500" in failed.stderr
    assert "faulty" not in gh.repos[REPO].branches and not gh.ref_updates_for(REPO, "faulty")
    git("push", "--quiet", "origin", "HEAD:refs/heads/faulty", cwd=work)
    assert gh.ref_updates_for(REPO, "faulty")[0].accepted


def test_open_server_still_serves_anonymous_git(tmp_path: Path) -> None:
    with GitHubServer() as gh:  # no require_auth: what existing tests and the demo get
        gh.add_repo(REPO)
        git = Git(None)
        work = clone(git, gh, REPO, tmp_path / "w")
        commit_file(git, work, "f.txt", "f\n", "F")
        git("push", "--quiet", "origin", "HEAD:refs/heads/anon", cwd=work)
        assert gh.ref_updates_for(REPO, "anon")[0].actor == "anonymous"
        # Credentials, when sent, are still checked.
        refs = f"{gh.git_url(REPO)}/info/refs?service=git-upload-pack"
        assert httpx.get(refs, auth=("x-access-token", "ghp_wrong")).status_code == 401
        assert httpx.get(refs, auth=("x-access-token", gh.token)).status_code == 200


def test_rest_refuses_wrong_expired_other_repo_and_underprivileged_tokens(gh: GitHubServer) -> None:
    gh.create_branch(REPO, "b")
    number = gh.open_pr(REPO, "b", "PR")
    path = f"/repos/{REPO}/pulls/{number}"
    assert rest(gh, "GET", path, STATIC).status_code == 200
    assert httpx.get(f"{gh.url}{path}", headers={"Authorization": f"token {STATIC}"}).status_code == 200
    assert httpx.get(f"{gh.url}{path}", auth=("x-access-token", STATIC)).status_code == 200
    bad = rest(gh, "GET", path, "ghp_nope")
    assert (bad.status_code, bad.json()["message"]) == (401, "Bad credentials")
    gh.register_token("ghp_short", login="dev", expires_in=60)
    gh.expire_token("ghp_short")
    assert rest(gh, "GET", path, "ghp_short").status_code == 401
    gh.register_token("ghp_web", login="dev", repositories=[OTHER])
    assert rest(gh, "GET", path, "ghp_web").status_code == 404
    gh.register_token("ghp_checks", login="dev", permissions={"checks": "read"})
    denied = rest(gh, "GET", path, "ghp_checks")
    assert denied.status_code == 403 and "not accessible" in denied.json()["message"]
    gh.register_token("ghp_pr_read", login="dev", permissions={"pull_requests": "read"})
    assert rest(gh, "PATCH", path, "ghp_pr_read", json={"title": "x"}).status_code == 403
    assert gh.pulls[(REPO, number)].title == "PR"


# -- the App -----------------------------------------------------------------------------


def test_app_jwt_is_verified(gh: GitHubServer, app_key: tuple[str, str]) -> None:
    private = app_key[0]
    other_private, _ = generate_app_key()
    now = time.time()
    cases = {
        "signed by another key": app_jwt(other_private),
        "expired": app_jwt(private, iat=now - 700, exp=now - 100),
        "lives too long": app_jwt(private, iat=now - 60, exp=now + 900),
        "issued in the future": app_jwt(private, iat=now + 300, exp=now + 600),
        "another app": app_jwt(private, iss=999),
        "not RS256": app_jwt(private, alg="HS256", key="a-shared-secret-that-is-32-bytes-long!"),
        "garbage": "not.a.jwt",
    }
    for why, token in cases.items():
        answer = mint(gh, token)
        assert answer.status_code == 401, why
        assert answer.json()["message"], why
    assert "too far in the future" in mint(gh, cases["lives too long"]).json()["message"]
    assert "signature" in mint(gh, cases["signed by another key"]).json()["message"]
    # 60 s of clock skew is tolerated, like GitHub.
    assert mint(gh, app_jwt(private, iat=now + 30, exp=now + 600)).status_code == 201
    assert mint(gh, app_jwt(private), installation=INSTALLATION + 1).status_code == 404
    assert httpx.get(f"{gh.url}/app", headers={"Authorization": f"Bearer {app_jwt(private)}"}).json()["id"] == APP_ID


def test_installation_tokens_are_limited_as_asked(gh: GitHubServer, app_key: tuple[str, str],
                                                  tmp_path: Path) -> None:
    token_jwt = app_jwt(app_key[0])
    answer = mint(gh, token_jwt, {"repositories": ["api"],
                                  "permissions": {"contents": "write", "pull_requests": "write"}})
    assert answer.status_code == 201
    body = answer.json()
    assert body["token"].startswith("ghs_") and body["expires_at"].endswith("Z")
    assert body["permissions"] == {"contents": "write", "pull_requests": "write", "metadata": "read"}
    assert [r["full_name"] for r in body["repositories"]] == [REPO] and body["repository_selection"] == "selected"
    token = body["token"]

    # A token for repo A pushes to A and cannot even see B.
    git = Git(token)
    work = clone(git, gh, REPO, tmp_path / "a")
    commit_file(git, work, "a.txt", "a\n", "A")
    git("push", "--quiet", "origin", "HEAD:refs/heads/foundry/a", cwd=work)
    assert gh.ref_updates_for(REPO, "foundry/a")[0].actor == "foundry[bot]"
    git("remote", "set-url", "origin", gh.git_url(OTHER), cwd=work)
    refused = git("push", "origin", "HEAD:refs/heads/foundry/a", cwd=work, check=False)
    assert refused.returncode != 0 and "Repository not found" in refused.stderr
    assert "foundry/a" not in gh.repos[OTHER].branches

    # The token's permissions are what it asked for: no checks, and the PR it opens is the bot's.
    assert rest(gh, "GET", f"/repos/{REPO}/commits/main/check-runs", token).status_code == 403
    opened = rest(gh, "POST", f"/repos/{REPO}/pulls", token,
                  json={"title": "A", "head": "foundry/a", "base": "main", "draft": True})
    assert opened.status_code == 201 and opened.json()["user"]["login"] == "foundry[bot]"

    for bad in ({"permissions": {"administration": "write"}}, {"permissions": {"checks": "write"}},
                {"repositories": ["nope"]}, {"repositories": [REPO]}, {"repository_ids": [123456789]}):
        refused_mint = mint(gh, token_jwt, bad)
        assert refused_mint.status_code == 422, bad
    by_id = mint(gh, token_jwt, {"repository_ids": [gh.repos[OTHER].id]}).json()
    assert [r["full_name"] for r in by_id["repositories"]] == [OTHER]

    gh.token_lifetime = 0.5
    short = mint(gh, token_jwt, {"repositories": ["api"]}).json()["token"]
    time.sleep(0.7)
    assert Git(short)("ls-remote", gh.git_url(REPO), check=False).returncode != 0
    assert rest(gh, "GET", f"/repos/{REPO}/pulls", short).status_code == 401


# -- REST the runner and the operator use ---------------------------------------------------


def test_create_and_update_pulls(gh: GitHubServer, hook: WebhookReceiver) -> None:
    gh.commit(REPO, "foundry/run-3", {"new.py": "x = 1\n"})
    path = f"/repos/{REPO}/pulls"
    created = rest(gh, "POST", path, STATIC, json={"title": "T", "head": "acme:foundry/run-3", "base": "main",
                                                   "body": "B", "draft": True})
    assert created.status_code == 201
    pr = created.json()
    assert (pr["draft"], pr["state"], pr["title"], pr["body"], pr["user"]["login"]) == (True, "open", "T", "B", "dev")
    again = rest(gh, "POST", path, STATIC, json={"title": "T", "head": "foundry/run-3", "base": "main"})
    assert again.status_code == 422 and "already exists" in again.json()["errors"][0]["message"]
    gh.create_branch(REPO, "empty")
    assert "No commits between" in rest(gh, "POST", path, STATIC, json={
        "title": "T", "head": "empty", "base": "main"}).json()["errors"][0]["message"]
    for bad in ({"head": "foundry/run-3", "base": "main"}, {"title": "T", "head": "nope", "base": "main"},
                {"title": "T", "head": "foundry/run-3", "base": "nope"}):
        assert rest(gh, "POST", path, STATIC, json=bad).status_code == 422, bad
    assert rest(gh, "POST", path, STATIC, content=b"{not json").status_code == 400

    number = pr["number"]
    edited = rest(gh, "PATCH", f"{path}/{number}", STATIC, json={"title": "T2", "body": "B2"})
    assert edited.status_code == 200 and (edited.json()["title"], edited.json()["body"]) == ("T2", "B2")
    closed = rest(gh, "PATCH", f"{path}/{number}", STATIC, json={"state": "closed"}).json()
    assert closed["state"] == "closed"
    assert rest(gh, "PATCH", f"{path}/{number}", STATIC, json={"state": "open"}).json()["state"] == "open"
    assert rest(gh, "PATCH", f"{path}/{number}", STATIC, json={"state": "merged"}).status_code == 422
    assert rest(gh, "PATCH", f"{path}/999", STATIC, json={"title": "x"}).status_code == 404
    assert gh.wait_webhooks(10) and hook.wait_for(4)
    actions = [b["action"] for e, b in events(hook, gh) if e == "pull_request"]
    assert actions == ["opened", "edited", "closed", "reopened"]
    assert [b["changes"] for e, b in events(hook, gh) if b.get("action") == "edited"] == [
        {"title": {"from": "T"}, "body": {"from": "B"}}]


def test_check_output_annotations_and_review_comments(gh: GitHubServer) -> None:
    sha = gh.commit(REPO, "foundry/run-4", {"src/app.py": "def main():\n    return 2\n\n\nx = 3\n"})
    number = gh.open_pr(REPO, "foundry/run-4", "PR")
    run_id = gh.set_check(REPO, sha, "failure", name="tests",
                          output={"title": "1 failed", "summary": "test_main failed", "text": "AssertionError"},
                          annotations=[{"path": "src/app.py", "start_line": 2, "annotation_level": "failure",
                                        "message": "expected 1", "title": "test_main"}])
    runs = rest(gh, "GET", f"/repos/{REPO}/commits/{sha}/check-runs", STATIC).json()["check_runs"]
    assert runs[0]["output"]["title"] == "1 failed" and runs[0]["output"]["annotations_count"] == 1
    assert rest(gh, "GET", f"/repos/{REPO}/check-runs/{run_id}", STATIC).json()["output"]["text"] == "AssertionError"
    notes = rest(gh, "GET", f"/repos/{REPO}/check-runs/{run_id}/annotations", STATIC).json()
    assert [(a["path"], a["start_line"], a["end_line"], a["annotation_level"], a["message"]) for a in notes] == [
        ("src/app.py", 2, 2, "failure", "expected 1")]
    with pytest.raises(ValueError, match="annotation_level"):
        gh.set_check(REPO, sha, "failure", annotations=[{"path": "a", "start_line": 1, "annotation_level": "bad",
                                                         "message": "m"}])

    review = gh.submit_review(REPO, number, "carol", "CHANGES_REQUESTED", "please fix",
                              comments=[{"path": "src/app.py", "line": 2, "body": "return 1 here"}])
    gh.add_review_comment(REPO, number, "bob", "src/app.py", 5, "why x?")
    comments = rest(gh, "GET", f"/repos/{REPO}/pulls/{number}/comments", STATIC).json()
    assert [(c["path"], c["line"], c["body"], c["user"]["login"], c["pull_request_review_id"]) for c in comments] == [
        ("src/app.py", 2, "return 1 here", "carol", review), ("src/app.py", 5, "why x?", "bob", None)]
    assert comments[0]["diff_hunk"].startswith("@@") and comments[0]["diff_hunk"].endswith("+    return 2")
    mine = rest(gh, "GET", f"/repos/{REPO}/pulls/{number}/reviews/{review}/comments", STATIC).json()
    assert [c["body"] for c in mine] == ["return 1 here"]
    assert rest(gh, "GET", f"/repos/{REPO}/pulls/{number}/reviews/1/comments", STATIC).status_code == 404
    assert gh.pull_json(REPO, number)["review_comments"] == 2


def test_renames_and_removals_are_reported_like_github(gh: GitHubServer, tmp_path: Path) -> None:
    git = Git(STATIC)
    work = clone(git, gh, REPO, tmp_path / "w")
    git("checkout", "--quiet", "-b", "foundry/run-5", cwd=work)
    body = "".join(f"line {i}\n" for i in range(30))
    commit_file(git, work, "src/big.py", body, "Big file")
    git("push", "--quiet", "origin", "foundry/run-5", cwd=work)
    number = gh.open_pr(REPO, "foundry/run-5", "Renames")
    gh.merge(REPO, number)
    git("fetch", "--quiet", "origin", cwd=work)
    git("checkout", "--quiet", "-b", "foundry/run-6", "origin/main", cwd=work)
    (work / "lib").mkdir()
    git("mv", "src/big.py", "lib/moved.py", cwd=work)
    (work / "lib/moved.py").write_text(body.replace("line 3\n", "line three\n"))
    git("rm", "--quiet", "README.md", cwd=work)
    commit_file(git, work, "src/app.py", "def main():\n    return 5\n", "Move, drop, edit")
    git("push", "--quiet", "origin", "foundry/run-6", cwd=work)
    number = gh.open_pr(REPO, "foundry/run-6", "Renames")
    files = {f["filename"]: f for f in rest(gh, "GET", f"/repos/{REPO}/pulls/{number}/files", STATIC).json()}
    assert {k: (v["status"], v.get("previous_filename")) for k, v in files.items()} == {
        "lib/moved.py": ("renamed", "src/big.py"), "README.md": ("removed", None), "src/app.py": ("modified", None)}
    assert (files["lib/moved.py"]["additions"], files["lib/moved.py"]["deletions"]) == (1, 1)
    assert (files["README.md"]["deletions"], files["src/app.py"]["changes"]) == (1, 2)
    assert files["src/app.py"]["patch"].startswith("@@ -1,2 +1,2 @@")


# -- the wire: gzip bodies, another bind address -------------------------------------------------


def test_gzip_request_bodies_reach_http_backend(gh: GitHubServer) -> None:
    head = gh.branch_sha(REPO, "main")
    lines = [f"want {head} side-band-64k\n", None, "done\n"]
    raw = b"".join(b"0000" if line is None else b"%04x%s" % (len(line) + 4, line.encode()) for line in lines)
    answer = httpx.post(f"{gh.git_url(REPO)}/git-upload-pack", content=gzip.compress(raw), auth=("x-access-token", STATIC),
                        headers={"Content-Type": "application/x-git-upload-pack-request", "Content-Encoding": "gzip"})
    assert answer.status_code == 200 and b"PACK" in answer.content
    assert answer.headers["Content-Type"] == "application/x-git-upload-pack-result"


def test_binds_the_address_it_is_given(tmp_path: Path) -> None:
    with GitHubServer(host="127.0.0.2") as gh:  # any local address: pods reach the node IP
        gh.add_repo(REPO)
        assert gh.url.startswith("http://127.0.0.2:") and gh.git_url(REPO).startswith("http://127.0.0.2:")
        clone(Git(None), gh, REPO, tmp_path / "w")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{gh.port}/repos/{REPO}/pulls")


def test_concurrent_pushes_and_control_commits_keep_model_and_git_in_step(gh: GitHubServer, tmp_path: Path) -> None:
    """Six pushes at once (four branches, two racing for one) while the control API commits
    elsewhere: git and the model agree after, and the race has one winner on record."""
    git = Git(STATIC)
    base = clone(git, gh, REPO, tmp_path / "base")
    works = []
    for i, branch in enumerate(["c/0", "c/1", "c/2", "c/3", "race", "race"]):
        work = tmp_path / f"w{i}"
        shutil.copytree(base, work)
        commit_file(git, work, f"f{i}.txt", f"{i}\n", f"commit {i}")
        works.append((work, branch))
    results: dict[int, subprocess.CompletedProcess] = {}
    barrier = threading.Barrier(len(works) + 1)

    def push(i: int, work: Path, branch: str) -> None:
        barrier.wait()
        results[i] = git("push", "origin", f"HEAD:refs/heads/{branch}", cwd=work, check=False)

    def control() -> None:
        barrier.wait()
        for n in range(5):
            gh.commit(REPO, "control", {"n.txt": f"{n}\n"}, f"control {n}")

    threads = [threading.Thread(target=push, args=(i, w, b)) for i, (w, b) in enumerate(works)]
    threads.append(threading.Thread(target=control))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(results[i].returncode == 0 for i in range(4)), [results[i].stderr for i in range(4)]
    race = [results[4].returncode, results[5].returncode]
    assert sorted(race) == [0, 1], race  # exactly one racer wins
    refs = {ref[len("refs/heads/"):]: sha for ref, sha in gh.stores[REPO].refs().items()}
    assert refs == gh.repos[REPO].branches
    for i in range(4):
        assert gh.files_at(REPO, f"c/{i}")[f"f{i}.txt"] == f"{i}\n"
    assert gh.files_at(REPO, "control")["n.txt"] == "4\n"
    raced = [u for u in gh.ref_updates_for(REPO, "race") if u.via == "git"]
    assert sum(u.accepted for u in raced) == 1 and raced and all(u.actor == "dev" for u in raced)
    winner = next(u for u in raced if u.accepted)
    # The loser was refused by git itself (stale ref) or lost the ref lock: never recorded as applied.
    assert all(u.reason in ('accepted', 'failed') for u in raced)
    assert refs["race"] == winner.new


def test_push_payload_matches_githubs_examples(gh: GitHubServer, hook: WebhookReceiver, tmp_path: Path,
                                               octokit_examples: dict[str, list[dict[str, Any]]]) -> None:
    git = Git(STATIC)
    work = clone(git, gh, REPO, tmp_path / "w")
    commit_file(git, work, "f.txt", "f\n", "F")
    git("push", "--quiet", "origin", "HEAD:refs/heads/shape", cwd=work)
    assert gh.wait_webhooks(10) and hook.wait_for(1)
    [push] = [b for e, b in events(hook, gh) if e == "push"]
    assert shape_mismatches(push, octokit_examples["push"]) == []
    for field in ("ref", "before", "after", "forced", "commits", "head_commit", "pusher", "repository", "sender"):
        assert field in push and any(field in e for e in octokit_examples["push"])


def test_pull_request_write_payloads_match_githubs_examples(
        gh: GitHubServer, hook: WebhookReceiver, octokit_examples: dict[str, list[dict[str, Any]]]) -> None:
    gh.commit(REPO, "foundry/shape", {"x.py": "x\n"})
    number = rest(gh, "POST", f"/repos/{REPO}/pulls", STATIC,
                  json={"title": "T", "head": "foundry/shape", "base": "main", "draft": True}).json()["number"]
    for change in ({"title": "T2"}, {"state": "closed"}, {"state": "open"}):
        assert rest(gh, "PATCH", f"/repos/{REPO}/pulls/{number}", STATIC, json=change).status_code == 200
    assert gh.wait_webhooks(10) and hook.wait_for(4)
    sent = {b["action"]: b for e, b in events(hook, gh) if e == "pull_request"}
    assert sorted(sent) == ["closed", "edited", "opened", "reopened"]
    for action, body in sent.items():
        examples = [e for e in octokit_examples["pull_request"] if e.get("action") == action]
        if action == "edited":  # GitHub publishes no `edited` example: the rest of it is `opened`'s shape
            examples = [e for e in octokit_examples["pull_request"] if e.get("action") == "opened"]
            body = {k: v for k, v in body.items() if k != "changes"}
        assert examples and shape_mismatches(body, examples) == [], action


def test_review_comment_payload_matches_githubs_examples(
        gh: GitHubServer, hook: WebhookReceiver, octokit_examples: dict[str, list[dict[str, Any]]]) -> None:
    gh.commit(REPO, "foundry/notes", {"src/app.py": "def main():\n    return 3\n"})
    number = gh.open_pr(REPO, "foundry/notes", "PR")
    review = gh.submit_review(REPO, number, "carol", "CHANGES_REQUESTED", "fix",
                              comments=[{"path": "src/app.py", "line": 2, "body": "not 3"}])
    assert gh.wait_webhooks(10) and hook.wait_for(3)
    sent = [(e, b) for e, b in events(hook, gh) if e.startswith("pull_request_review")]
    assert [e for e, _ in sent] == ["pull_request_review_comment", "pull_request_review"]
    note = sent[0][1]
    assert (note["comment"]["pull_request_review_id"], note["comment"]["line"]) == (review, 2)
    examples = [e for e in octokit_examples["pull_request_review_comment"] if e.get("action") == "created"]
    # Newer than these examples, documented by GitHub: a comment's subject_type (line | file),
    # a pull request's draft and auto_merge (the pull_request_review examples carry the last two).
    newer = {"comment.subject_type", "pull_request.draft", "pull_request.auto_merge"}
    problems = [p for p in shape_mismatches(note, examples) if p.split(":")[0] not in newer]
    assert examples and problems == [], problems
