"""The local GitHub's webhooks: headers, both signature schemes, and payload shapes
checked against GitHub's published examples (@octokit/webhooks-examples)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from foundry.dev.github_server import GitHubServer
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "gh-webhook-secret"
REPO = "acme/api"
BRANCH = "foundry/acme-42-a1"
EXAMPLES_VERSION = "7.6.1"


def github_signature_256_ok(secret: str, raw: bytes, header: str) -> bool:
    """GitHub's documented scheme: 'sha256=' + hex HMAC-SHA256 of the payload with the secret."""
    if not header.startswith("sha256="):
        return False
    mac = hmac.HMAC(secret.encode("utf-8"), raw, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), header)


def github_signature_sha1_ok(secret: str, raw: bytes, header: str) -> bool:
    """The legacy X-Hub-Signature: 'sha1=' + hex HMAC-SHA1."""
    mac = hmac.HMAC(secret.encode("utf-8"), raw, hashlib.sha1)
    return hmac.compare_digest("sha1=" + mac.hexdigest(), header)


def play_a_pr_lifecycle(gh: GitHubServer) -> None:
    """Every event and action the stand-in emits, in the order a Foundry run meets them."""
    gh.add_repo(REPO, files={"README.md": "# api\n"})
    gh.ping(REPO)
    sha1 = gh.commit(REPO, BRANCH, {"app.py": "print('hi')\n"})
    number = gh.open_pr(REPO, BRANCH, "ACME-42: health endpoint", "Closes ACME-42")
    gh.set_check(REPO, sha1, "failure")
    sha2 = gh.commit(REPO, BRANCH, {"app.py": "print('fixed')\n"})  # synchronize
    gh.set_check(REPO, sha2, "success")
    gh.submit_review(REPO, number, "carol", "APPROVED", "ship it")
    gh.comment(REPO, number, "carol", "thanks")
    gh.merge(REPO, number, user="carol")
    gh.create_branch(REPO, "spare")
    other = gh.open_pr(REPO, "spare", "An abandoned PR")
    gh.close(REPO, other)


EXPECTED_SEQUENCE = [
    ("ping", None), ("pull_request", "opened"), ("check_run", "completed"), ("check_suite", "completed"),
    ("pull_request", "synchronize"), ("check_run", "completed"), ("check_suite", "completed"),
    ("pull_request_review", "submitted"), ("issue_comment", "created"), ("pull_request", "closed"),
    ("pull_request", "opened"), ("pull_request", "closed"),
]


@pytest.fixture(scope="module")
def lifecycle() -> Iterator[tuple[list[Any], GitHubServer]]:
    with WebhookReceiver() as hook, GitHubServer(webhook_url=f"{hook.url}/hooks/github", webhook_secret=SECRET,
                                                  retry_scale=0.0001) as gh:
        play_a_pr_lifecycle(gh)
        assert gh.wait_webhooks(10) and hook.wait_for(len(EXPECTED_SEQUENCE))
        # In the order they were sent: each delivery is its own request, so under load they may arrive in another.
        sent = {d.id: i for i, d in enumerate(gh.deliveries)}
        yield sorted(hook.received, key=lambda m: sent[m.headers["X-GitHub-Delivery"]]), gh


def by_event(received: list[Any], event: str, action: str | None) -> dict[str, Any]:
    for msg in received:
        body = json.loads(msg.body)
        if msg.headers["X-GitHub-Event"] == event and body.get("action") == action:
            return body
    raise AssertionError(f"no {event}/{action} delivered")


def test_headers_and_both_signatures_verify(lifecycle: tuple[list[Any], GitHubServer]) -> None:
    received, _ = lifecycle
    assert [(m.headers["X-GitHub-Event"], json.loads(m.body).get("action")) for m in received] == EXPECTED_SEQUENCE
    ids = set()
    for msg in received:
        h = msg.headers
        assert h["Content-Type"] == "application/json" and h["User-Agent"].startswith("GitHub-Hookshot/")
        ids.add(str(uuid.UUID(h["X-GitHub-Delivery"])))
        assert github_signature_256_ok(SECRET, msg.body, h["X-Hub-Signature-256"])
        assert github_signature_sha1_ok(SECRET, msg.body, h["X-Hub-Signature"])
        assert not github_signature_256_ok("wrong", msg.body, h["X-Hub-Signature-256"])
        assert not github_signature_256_ok(SECRET, msg.body + b" ", h["X-Hub-Signature-256"])
    assert len(ids) == len(received)


def test_payloads_carry_what_foundry_reads(lifecycle: tuple[list[Any], GitHubServer]) -> None:
    received, gh = lifecycle
    opened = by_event(received, "pull_request", "opened")
    sync = by_event(received, "pull_request", "synchronize")
    merged = by_event(received, "pull_request", "closed")
    assert opened["number"] == opened["pull_request"]["number"] == 1
    assert opened["pull_request"]["head"]["ref"] == BRANCH and opened["repository"]["full_name"] == REPO
    assert sync["after"] == sync["pull_request"]["head"]["sha"] != opened["pull_request"]["head"]["sha"]
    assert sync["before"] == opened["pull_request"]["head"]["sha"]
    assert merged["pull_request"]["merged"] is True and merged["pull_request"]["state"] == "closed"
    assert merged["pull_request"]["merged_by"]["login"] == "carol" and merged["sender"]["login"] == "carol"
    closed_unmerged = [json.loads(m.body) for m in received if m.headers["X-GitHub-Event"] == "pull_request"][-1]
    assert closed_unmerged["action"] == "closed" and closed_unmerged["pull_request"]["merged"] is False

    runs = [json.loads(m.body) for m in received if m.headers["X-GitHub-Event"] == "check_run"]
    assert [(r["check_run"]["head_sha"], r["check_run"]["conclusion"]) for r in runs] == [
        (opened["pull_request"]["head"]["sha"], "failure"), (sync["after"], "success")]
    assert runs[0]["check_run"]["pull_requests"][0]["number"] == 1
    suite = by_event(received, "check_suite", "completed")["check_suite"]
    assert (suite["conclusion"], suite["head_branch"], suite["pull_requests"][0]["number"]) == ("failure", BRANCH, 1)

    review = by_event(received, "pull_request_review", "submitted")
    assert "merged" not in review["pull_request"]  # GitHub embeds the short PR form here
    assert (review["review"]["state"], review["review"]["user"]["login"]) == ("approved", "carol")
    assert review["review"]["commit_id"] == sync["after"] == review["pull_request"]["head"]["sha"]
    comment = by_event(received, "issue_comment", "created")
    assert comment["issue"]["number"] == 1 and "pull_request" in comment["issue"]
    assert comment["comment"]["body"] == "thanks"
    ping = by_event(received, "ping", None)
    assert ping["hook_id"] == gh.hook_id and ping["hook"]["config"]["url"].endswith("/hooks/github")


# -- shapes against GitHub's published examples ---------------------------------------

# Fields the stand-in sends that the examples lack but GitHub's docs specify:
# issue.pull_request appears only when the commented issue is a pull request, and
# the examples' issue_comment payloads are all on plain issues.
DOCUMENTED_EXTRAS = ("issue.pull_request",)


@pytest.fixture(scope="module")
def octokit_examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot fetch @octokit/webhooks-examples")
    prefix = tmp_path_factory.mktemp("octokit")
    try:
        subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
                        f"@octokit/webhooks-examples@{EXAMPLES_VERSION}"], check=True, timeout=120,
                       capture_output=True)
    except (subprocess.SubprocessError, OSError) as err:
        pytest.skip(f"could not install @octokit/webhooks-examples: {err}")
    index = prefix / "node_modules/@octokit/webhooks-examples/api.github.com/index.json"
    return {entry["name"]: entry["examples"] for entry in json.loads(Path(index).read_text())}


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "array", str: "string"}[type(value)]


def paths(value: Any, prefix: str = "", out: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    out = {} if out is None else out
    if prefix:
        out.setdefault(prefix, set()).add(kind(value))
    if isinstance(value, dict):
        for key, item in value.items():
            paths(item, f"{prefix}.{key}" if prefix else key, out)
    elif isinstance(value, list):
        for item in value:
            paths(item, f"{prefix}[]", out)
    return out


def shape_mismatches(ours: dict[str, Any], examples: list[dict[str, Any]]) -> list[str]:
    """Paths we send that no example has, or that have a type no example uses (null is always allowed:
    an example's null says the field is nullable, ours may be null where the example has a value)."""
    reference: dict[str, set[str]] = {}
    for example in examples:
        for path, kinds in paths(example).items():
            reference.setdefault(path, set()).update(kinds)
    # Below a field every example leaves null there is nothing to compare against.
    unknown_below = tuple(p + "." for p, kinds in reference.items() if kinds == {"null"})
    problems = []
    for path, kinds in paths(ours).items():
        if path.startswith(DOCUMENTED_EXTRAS) or path.startswith(unknown_below):
            continue
        if path not in reference:
            problems.append(f"{path}: not in GitHub's examples")
            continue
        allowed = reference[path]
        if allowed != {"null"} and not (kinds - {"null"}) <= allowed:
            problems.append(f"{path}: {sorted(kinds)} vs {sorted(allowed)}")
    return problems


# What Foundry reads from each payload: these must exist in ours and in GitHub's.
FOUNDRY_READS = {
    ("pull_request", "opened"): ["number", "pull_request.number", "pull_request.state", "pull_request.merged",
                                 "pull_request.html_url", "pull_request.head.ref", "pull_request.head.sha",
                                 "pull_request.base.ref", "pull_request.title", "repository.full_name", "sender.login"],
    ("pull_request", "synchronize"): ["before", "after", "pull_request.head.sha", "pull_request.head.ref"],
    ("pull_request", "closed"): ["pull_request.merged", "pull_request.merged_at", "pull_request.state",
                                 "pull_request.head.ref"],
    ("check_run", "completed"): ["check_run.head_sha", "check_run.status", "check_run.conclusion", "check_run.name",
                                 "check_run.pull_requests[].number", "check_run.check_suite.head_branch",
                                 "repository.full_name"],
    ("check_suite", "completed"): ["check_suite.head_sha", "check_suite.head_branch", "check_suite.conclusion",
                                   "check_suite.status", "check_suite.pull_requests[].number"],
    ("pull_request_review", "submitted"): ["review.state", "review.user.login", "review.commit_id",
                                           "pull_request.number", "pull_request.head.ref"],
    ("issue_comment", "created"): ["issue.number", "comment.id", "comment.body", "comment.user.login"],
    ("ping", None): ["zen", "hook_id", "hook.config.url"],
}


@pytest.mark.parametrize("event,action", sorted(FOUNDRY_READS, key=str))
def test_payload_shapes_match_githubs_examples(lifecycle: tuple[list[Any], GitHubServer],
                                               octokit_examples: dict[str, list[dict[str, Any]]],
                                               event: str, action: str | None) -> None:
    received, _ = lifecycle
    ours = by_event(received, event, action)
    examples = [e for e in octokit_examples[event] if e.get("action") == action]
    assert examples, f"GitHub publishes no {event}/{action} example"
    assert shape_mismatches(ours, examples) == []
    ours_paths, their_paths = paths(ours), paths(examples[0])
    for field in FOUNDRY_READS[(event, action)]:
        assert field in ours_paths, f"stand-in lacks {field}"
        assert any(field in paths(e) for e in examples), f"GitHub's example lacks {field}"
    assert ours_paths.keys() & their_paths.keys()  # sanity: compared the right thing


def test_the_shape_check_catches_a_wrong_field() -> None:
    """Guard for the comparison itself: a renamed or retyped field is reported."""
    example = {"action": "opened", "pull_request": {"number": 1, "head": {"sha": "abc"}, "merged_at": None}}
    good = {"action": "opened", "pull_request": {"number": 2, "head": {"sha": "def"}, "merged_at": "2024-01-01T00:00:00Z"}}
    assert shape_mismatches(good, [example]) == []
    assert shape_mismatches({"action": "opened", "pull_request": {"num": 2}}, [example]) == [
        "pull_request.num: not in GitHub's examples"]
    assert shape_mismatches({"action": "opened", "pull_request": {"number": "2"}}, [example]) == [
        "pull_request.number: ['string'] vs ['number']"]
