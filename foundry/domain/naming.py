"""Deterministic Kubernetes names for FoundryRuns and FoundryApprovals.

The name of a run is the first guard of "one active run per issue": every
bridge replica that sees a webhook for the same issue computes the same name,
and the API server accepts exactly one create. So the functions here are pure,
depend only on the ticket's *stable* identity (tracker + issue id), and their
outputs are pinned by golden tests: changing them would let an upgraded bridge
create a second run for an issue an older bridge already started.

The issue key (ACME-42) is deliberately not part of any name: keys change when
an issue moves between teams, ids do not. Keys go into labels and columns.
"""

from __future__ import annotations

import hashlib
import re

from foundry.domain.plans import is_plan_hash

# A run name must leave room for the suffixes derived from it (the agent Job
# `<run>-a<attempt>` and its ConfigMap) inside the 63-character label limit.
RUN_NAME_MAX = 52
LABEL_MAX = 63
# Object names of custom resources are DNS-1123 subdomains (253), but we keep
# approval names readable and far below that.
APPROVAL_NAME_MAX = 120
MAX_ATTEMPT = 9999
ISSUE_ID_MAX = 128
# Foundry's finalizer on every FoundryRun: its Jobs, comments and database row are closed before
# the object goes. The same name since the first release, so older runs keep theirs.
RUN_FINALIZER = "foundry.dev/finalizer"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TRACKER = re.compile(r"^[a-z][a-z0-9]{0,19}$")
_DECISIONS = {"approve": "approve", "reject": "reject", "stop": "stop", "replan": "replan"}

# Short, readable prefixes for the trackers we know; any other tracker name is
# used as-is (it is already validated to be short and lowercase).
_TRACKER_PREFIX = {"linear": "lin"}

_ID_PREFIX_MAX = 12
_RUN_HASH_LEN = 12  # 48 bits of sha256: collisions need ~10^7 issues *and* a shared prefix
_APPROVER_SLUG_MAX = 24
_APPROVAL_HASH_LEN = 10


class InvalidNameInput(ValueError):
    """An input cannot be turned into a name; the message says which and why."""


def _slug(text: str, limit: int, *, keep_tail: bool = False) -> str:
    """A readable DNS-label fragment of `text` of at most `limit` characters.

    Lowercase; runs of anything outside [a-z0-9] become one '-'. When too long,
    whole '-'-separated words are kept from the start (or the end with
    keep_tail), so `9cfb482a-81e3-...` becomes `9cfb482a`, not `9cfb482a-81e`.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]
    if keep_tail:
        words.reverse()
    kept: list[str] = []
    for word in words:
        if len("-".join([*kept, word])) > limit:
            break
        kept.append(word)
    if not kept and words:  # a single word longer than the limit: cut it
        first = words[0]
        kept = [first[-limit:] if keep_tail else first[:limit]]
    if keep_tail:
        kept.reverse()
    return "-".join(kept)


def _digest(*parts: str) -> str:
    # NUL separates the parts so ("ab", "c") and ("a", "bc") hash differently.
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def _check_tracker(tracker: str) -> None:
    if not isinstance(tracker, str) or not _TRACKER.match(tracker):
        raise InvalidNameInput(
            f"tracker must be a short lowercase word like 'linear' "
            f"(letters and digits, at most 20), got {tracker!r}"
        )


def _check_issue_id(issue_id: str) -> None:
    if not isinstance(issue_id, str) or not issue_id or issue_id != issue_id.strip():
        raise InvalidNameInput(f"issue_id must be a non-empty string without surrounding spaces, got {issue_id!r}")
    if len(issue_id) > ISSUE_ID_MAX:
        raise InvalidNameInput(f"issue_id is longer than {ISSUE_ID_MAX} characters: {issue_id[:40]!r}...")
    if any(not ("!" <= ch <= "~") for ch in issue_id):
        raise InvalidNameInput(f"issue_id must be printable ASCII without spaces, got {issue_id!r}")


def _check_attempt(attempt: int) -> None:
    # bool is an int subclass; True as an attempt number is always a bug.
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 1 <= attempt <= MAX_ATTEMPT:
        raise InvalidNameInput(f"attempt must be an integer from 1 to {MAX_ATTEMPT}, got {attempt!r}")


def run_name(tracker: str, issue_id: str, attempt: int) -> str:
    """The FoundryRun name for one attempt at one issue.

    Shape: `<tracker prefix>-<readable id prefix>-<hash>-<attempt>`, e.g.
    `lin-9cfb482a-81e-3f6c2d0a41b7-1`. The hash covers tracker and the exact
    issue id (case included), so two ids that slug to the same prefix still get
    different names. At most RUN_NAME_MAX characters, a valid DNS-1123 label.
    """
    _check_tracker(tracker)
    _check_issue_id(issue_id)
    _check_attempt(attempt)
    prefix = _TRACKER_PREFIX.get(tracker, tracker)
    parts = [prefix]
    id_part = _slug(issue_id, _ID_PREFIX_MAX)
    if id_part:
        parts.append(id_part)
    parts.append(_digest(tracker, issue_id)[:_RUN_HASH_LEN])
    parts.append(str(attempt))
    name = "-".join(parts)
    # Guaranteed by the limits above; asserted so a future edit cannot silently break it.
    assert len(name) <= RUN_NAME_MAX and DNS1123_LABEL.match(name), name
    return name


def approval_name(run: str, decision: str, approver: str, comment_id: str | None = None,
                  plan_hash: str | None = None) -> str:
    """The FoundryApproval name for one approver's decision on one run.

    Deterministic so that the same command applied twice (a retried webhook, a
    repeated `foundry approve`) is a 409 rather than a second approval.
    Shape: `<run>-<decision>-<approver slug>-<hash>`; the hash covers all three
    inputs exactly, so approvers whose identities slug alike stay distinct.
    `comment_id` (a decision made in a Linear comment) joins the hash: each
    comment is its own record, so an object created first under the same
    (run, decision, approver) cannot take the name of the real comment's one.
    `plan_hash` (the plan the decision is about, spec.planHash) joins it too:
    approving plan B after plan A is a new decision, not a 409 onto the old one.
    Without either the name is what it always was (pinned by golden tests).
    """
    if not isinstance(run, str) or len(run) > LABEL_MAX or not DNS1123_LABEL.match(run):
        raise InvalidNameInput(f"run must be a FoundryRun name (a DNS-1123 label of at most {LABEL_MAX}), got {run!r}")
    if decision not in _DECISIONS:
        raise InvalidNameInput(f"decision must be one of {sorted(_DECISIONS)}, got {decision!r}")
    if not isinstance(approver, str) or not approver.strip():
        raise InvalidNameInput(f"approver must be a non-empty identity string, got {approver!r}")
    parts = [run, _DECISIONS[decision]]
    # Kubernetes service-account users all start with the same long prefix;
    # the readable part is the tail, so slug from the end.
    slug = _slug(approver, _APPROVER_SLUG_MAX, keep_tail=True)
    if slug:
        parts.append(slug)
    if plan_hash is not None and not is_plan_hash(plan_hash):
        raise InvalidNameInput(f"plan_hash must look like sha256:<64 lowercase hex digits>, got {plan_hash!r}")
    hashed: tuple[str, ...] = (run, decision, approver)
    if plan_hash is not None:
        # Always five parts with a plan, so (comment id X) and (plan X) never hash alike.
        hashed += (comment_id or "", plan_hash)
    elif comment_id is not None:
        hashed += (comment_id,)
    parts.append(_digest(*hashed)[:_APPROVAL_HASH_LEN])
    name = "-".join(parts)
    assert len(name) <= APPROVAL_NAME_MAX and DNS1123_LABEL.match(name), name
    return name


def label_value(text: str) -> str:
    """`text` as a Kubernetes label value, unchanged when it already is one.

    Otherwise invalid characters become '-', the result is trimmed to fit and a
    short hash of the original is appended, so distinct inputs stay distinct.
    """
    if not isinstance(text, str):
        raise InvalidNameInput(f"label value must be a string, got {text!r}")
    if len(text) <= LABEL_MAX and LABEL_VALUE.match(text):
        return text
    digest = _digest(text)[:10]
    body = re.sub(r"[^-A-Za-z0-9_.]+", "-", text)[: LABEL_MAX - len(digest) - 1]
    body = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", body)
    return f"{body}-{digest}" if body else digest
