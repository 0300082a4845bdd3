"""What the work queue remembers of each FoundryRun, and which watch events
are worth a reconcile (pure).

The operator keeps, per run, only what the queue's decisions need: the phase,
the resourceVersion and generation, a digest of the labels and annotations,
and four flags. The full object is read from the API server when a worker
acts on it, so the memory per idle run stays a few hundred bytes.
"""

from __future__ import annotations

from typing import Any, Mapping

from foundry.domain.naming import RUN_FINALIZER as FINALIZER
from foundry.domain.phases import ACTIVE_PHASE_NAMES

# The pause switch: a run carrying this label (value "true") is left alone.
PAUSED_LABEL = "foundry.dev/paused"
PAUSED = "Paused"  # the condition type that says so
REASON_LABEL = "PausedByLabel"
REASON_OPERATOR = "PausedByOperator"
REASON_RESUMED = "Resumed"
# Annotations written by kopf (before the work queue) or by tooling that are no reason to reconcile.
_IGNORED_ANNOTATIONS = ("kopf.foundry.dev/", "kubectl.kubernetes.io/last-applied-configuration")


class Seen:
    __slots__ = ("phase", "rv", "generation", "marks", "paused_label", "deleting", "finalized",
                 "paused_condition", "settled_rv", "no_finalizers", "fresh")

    def __init__(self, phase: str | None, rv: str, generation: int, marks: int, paused_label: bool,
                 deleting: bool, finalized: bool, paused_condition: bool, settled_rv: int = -1,
                 no_finalizers: bool = False) -> None:
        self.phase = phase
        self.rv = rv
        self.generation = generation
        self.marks = marks
        self.paused_label = paused_label
        self.deleting = deleting
        self.finalized = finalized
        self.paused_condition = paused_condition
        # The resourceVersion of the read that fixed the run's current wake; events up to it are our own.
        self.settled_rv = settled_rv
        # No finalizer at all at `rv` (a new run): ours can be added without reading the run first.
        self.no_finalizers = no_finalizers
        # A new run's whole object as the watch brought it, kept only until its first reconcile
        # starts from it instead of a GET (new_run_body); None for every other run, so the
        # memory per idle run stays small.
        self.fresh: Mapping[str, Any] | None = None

    @property
    def active(self) -> bool:
        return not self.phase or self.phase in ACTIVE_PHASE_NAMES

    def __repr__(self) -> str:
        return (f"Seen(phase={self.phase!r}, rv={self.rv!r}, deleting={self.deleting}, finalized={self.finalized}, "
                f"paused_label={self.paused_label}, paused_condition={self.paused_condition})")


def _marks(meta: Mapping[str, Any]) -> int:
    labels = tuple(sorted((meta.get("labels") or {}).items()))
    annotations = tuple(sorted((k, v) for k, v in (meta.get("annotations") or {}).items()
                               if not k.startswith(_IGNORED_ANNOTATIONS)))
    return hash((labels, annotations))


def is_paused_label(labels: Mapping[str, Any] | None) -> bool:
    return str((labels or {}).get(PAUSED_LABEL, "")).strip().lower() == "true"


def paused_condition(status: Mapping[str, Any] | None) -> bool:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == PAUSED:
            return cond.get("status") == "True"
    return False


def seen(body: Mapping[str, Any], settled_rv: int = -1) -> Seen:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    return Seen(
        phase=status.get("phase") or None,
        rv=str(meta.get("resourceVersion") or ""),
        generation=int(meta.get("generation") or 0),
        marks=_marks(meta),
        paused_label=is_paused_label(meta.get("labels")),
        deleting=bool(meta.get("deletionTimestamp")),
        finalized=FINALIZER in (meta.get("finalizers") or ()),
        paused_condition=paused_condition(status),
        settled_rv=settled_rv,
        no_finalizers=not meta.get("finalizers"),
    )


def keep_if_new(known: Seen, body: Mapping[str, Any]) -> None:
    """Keep the watch's object on a run not yet reconciled (no phase, not being deleted), for
    the first reconcile to start from: its writes are conditional on this resourceVersion, so
    a change made since is a 409 and a read, as for any stale start."""
    if known.phase is None and not known.deleting:
        known.fresh = body


def new_run_body(known: Seen | None) -> Mapping[str, Any] | None:
    """The kept object, if it is still the version last seen (then dropped: it is used once)."""
    if known is None or known.fresh is None:
        return None
    body, known.fresh = known.fresh, None
    meta = body.get("metadata") or {}
    return body if str(meta.get("resourceVersion") or "") == known.rv else None


def rv_number(rv: str) -> int:
    """An etcd-backed resourceVersion as a number (-1: not one). The API calls it opaque; etcd's
    are increasing revisions, which is all this needs: telling our own older writes from newer ones."""
    try:
        return int(rv)
    except (TypeError, ValueError):
        return -1


def worth_reconciling(before: Seen | None, now: Seen, *, working: bool, paused_all: bool) -> bool:
    """Whether the watch event that turned `before` into `now` asks for a reconcile.

    Our own status writes come back as events too; reconciling on each would
    double the work. So: a run new to us, a deletion, a change of labels or
    annotations (the bridge's pr-hint, the pause switch), a new generation, or
    a phase moved by someone else (a resourceVersion past the read our current
    wake was computed from, while no worker here holds the run)."""
    if now.deleting:
        return before is None or not before.deleting
    if (paused_all or now.paused_label) != now.paused_condition and now.active:
        return True  # the Paused condition must be written or cleared
    if not now.active:
        return False  # ended: nothing to do until it is deleted
    if before is None:
        return True
    if now.marks != before.marks or now.generation != before.generation:
        return True
    if now.phase != before.phase and not working:
        rv = rv_number(now.rv)
        return rv < 0 or rv > now.settled_rv
    return False
