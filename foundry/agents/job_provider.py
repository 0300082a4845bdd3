"""The `job` provider: one Kubernetes Job per attempt.

Idempotent by name: the Job, its input ConfigMap and its token Secret are read
before they are created, and a 409 on create means another operator (or our
own earlier, crashed self) created it first, so it is adopted. A Job is never
created twice for one attempt, and never replaced.

Order: the Job first, then the ConfigMap and the Secret owned by it (an owner
needs a uid). Until both exist the kubelet holds the pod in ContainerCreating;
a crash in between is repaired by the replayed dispatch, which adopts the Job
and creates what is missing.

Reading an attempt: the Job's conditions say whether it ended; the pod's
termination messages say how (foundry.agents.result). A Job whose pods are
refused by admission never gets a pod: the Job controller's FailedCreate Event
on the Job says why, and the attempt is reported failed with reason PodRefused
at once instead of "running" until its deadline.

A plan (`<run>-p<n>`, docs/decisions/0021-plan-job.md) is the same lifecycle
with its own names, selector and token: a read-only one, or none (then no
Secret and nothing mounted), never the push token. Its plan is believed only
once checked (foundry.agents.plan_result); a plan cut from the 4 KiB result
is read from the verify container's log.

The push token: never logged, never in an Event or error message; the Secret
is deleted as soon as the attempt is seen to end (the Job's garbage collection
would take it too, later). A token that will expire while the Job still runs
is replaced in the Secret on a resync (the kubelet updates mounted Secrets).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from kubernetes import client
from urllib3.exceptions import HTTPError as Urllib3Error

from foundry.agents.provider import (DEADLINE_EXCEEDED, FAILED, MISSING, POD_REFUSED, RUNNING, SUCCEEDED, AgentError,
                                 AgentUnavailable, attempt_name, plan_job_name, plan_record, record, run_identity,
                                 utc_iso)
from foundry.agents.credentials import CredentialError, PushToken, StaticTokenSource, TokenSource
from foundry.agents.job_manifest import (ANNOTATION_REPO, ANNOTATION_TOKEN_EXPIRES, PLAN_STEPS, READ_TOKEN_KEY,
                                         TOKEN_KEY, attempt_selector, build_input_configmap, build_job,
                                         build_plan_input_configmap, build_plan_job, build_read_token_secret,
                                         build_token_secret, input_configmap_name, job_namespace,
                                         plan_input_configmap_name, plan_selector, plan_token_secret_name,
                                         token_secret_name)
from foundry.agents.plan_result import MAX_LOG_BYTES, PLAN_INVALID, PlanInvalid, checked_plan
from foundry.agents.result import PLANNED, RESULT_FIELDS, newest_pod, pod_cause, pod_result
from foundry.config import FoundryConfig

# Replace a token that has less than this left: a resync comes every
# timeouts.resync_seconds, and git needs it valid for a whole push.
TOKEN_REFRESH_MARGIN = timedelta(minutes=15)


def job_state(job: Mapping[str, Any] | None) -> dict[str, Any]:
    """running | succeeded | failed | missing from a Job (a dict as the API returns it), with times and reason.

    Complete/SuccessCriteriaMet → succeeded; Failed/FailureTarget → failed (the
    *Target conditions mean the controller has decided and is cleaning up).
    """
    if job is None:
        return {"state": MISSING}
    status = job.get("status") or {}
    meta = job.get("metadata") or {}
    started = status.get("startTime") or meta.get("creationTimestamp")
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind, state in (("Failed", FAILED), ("FailureTarget", FAILED), ("Complete", SUCCEEDED),
                        ("SuccessCriteriaMet", SUCCEEDED)):
        cond = conds.get(kind)
        if cond is not None:
            finished = status.get("completionTime") or cond.get("lastTransitionTime")
            out = {"state": state, "startedAt": _iso(started), "finishedAt": _iso(finished)}
            if state == FAILED:
                out["reason"] = cond.get("reason") or "Failed"
                if cond.get("message"):
                    out["message"] = cond["message"]
            return out
    return {"state": RUNNING, "startedAt": _iso(started)}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return utc_iso(value)
    return str(value)


def _outside(what: str, err: Exception, *, quiet: bool = False) -> Exception:
    """Map a client error: overload/outage → AgentUnavailable (retry), the rest → AgentError (say why).
    `quiet`: leave the API server's message out (for Secrets, whose request carried a token)."""
    if isinstance(err, client.ApiException):
        if err.status in (429, 500, 502, 503, 504) or err.status == 0:
            return AgentUnavailable(f"{what}: API server answered {err.status} {err.reason}")
        detail = "" if quiet else f": {_status_message(err)}"
        return AgentError(f"{what}: {err.status} {err.reason}{detail}")
    return AgentUnavailable(f"{what}: {type(err).__name__}" if quiet else f"{what}: {err}")


def _status_message(err: client.ApiException) -> str:
    """The API server's Status.message (what was wrong), else the raw body."""
    try:
        return str(json.loads(err.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.body or err.reason)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def refusal(events: list[Mapping[str, Any]]) -> str | None:
    """The newest FailedCreate message of the Job controller that says the pod was
    refused (PodSecurity, a missing ServiceAccount, quota): None when there is none."""
    refused = [e for e in events if e.get("reason") == "FailedCreate" and "forbidden" in str(e.get("message") or "")]
    if not refused:
        return None
    newest = max(refused, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or
                                            (e.get("metadata") or {}).get("creationTimestamp") or ""))
    return " ".join(str(newest.get("message")).split())[:1000]


def failure_cause(job: Mapping[str, Any], pod: Mapping[str, Any] | None,
                  result: Mapping[str, Any] | None, what: str = "attempt") -> dict[str, Any]:
    """{'cause': ...} (and what it implies) for a failed attempt the cluster ended: a step the
    kubelet OOM-killed, or the Job controller's deadline; {} otherwise. The pod is killed at the
    deadline, so its result (if any) tells only how its last step was interrupted, or is an earlier
    step's (`pushed` from prepare): the deadline leads, and the attempt's outcome is `failed`."""
    cause = pod_cause(pod) if pod is not None else None
    if cause is not None:
        return {"cause": cause}
    if job_state(job).get("reason") != DEADLINE_EXCEEDED:
        return {}
    seconds = (job.get("spec") or {}).get("activeDeadlineSeconds")
    reason = f"the {what} ran past its deadline of {seconds} s (DeadlineExceeded)"
    if result is not None and result.get("reason"):
        reason += f"; {result['reason']}"
    return {"cause": DEADLINE_EXCEEDED, "outcome": "failed", "reason": reason[:1000]}


@dataclass(frozen=True)
class _Kind:
    """What tells an attempt's objects from a plan's: their names, selector, builders and token.
    The create-or-adopt, token and reading logic below is one for both."""

    what: str  # in messages: "attempt" or "plan"
    job_name: Callable[[str, int], str]
    selector: Callable[[Mapping[str, Any], int], str]
    input_name: Callable[[str, int], str]
    build_input: Callable[..., dict[str, Any]]  # (run, n, job_input, job)
    secret_name: Callable[[str, int], str]
    build_secret: Callable[..., dict[str, Any]]  # (run, n, token, job, expires_at)
    token_key: str
    planning: bool  # a plan: a read token (or none), never the push token


ATTEMPT = _Kind("attempt", attempt_name, attempt_selector, input_configmap_name, build_input_configmap,
                token_secret_name, build_token_secret, TOKEN_KEY, planning=False)
PLAN = _Kind("plan", plan_job_name, plan_selector, plan_input_configmap_name, build_plan_input_configmap,
             plan_token_secret_name, build_read_token_secret, READ_TOKEN_KEY, planning=True)
VERIFY_STEP = PLAN_STEPS[-1]  # the plan pod's main container, whose log frames the whole plan


class JobProvider:
    """Agent attempts as batch/v1 Jobs (in agent.namespace or the run's), through an explicit ApiClient."""

    def __init__(self, cfg: FoundryConfig, api: client.ApiClient, tokens: TokenSource | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.cfg = cfg
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.tokens: TokenSource = tokens if tokens is not None else StaticTokenSource.from_env()
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        # (namespace, secret) → (job uid, token expiry or None): spares a Secret read per resync.
        self._secrets: dict[tuple[str, str], tuple[str, datetime | None]] = {}
        self._secrets_lock = threading.Lock()

    # -- reads

    def _read_job(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            job = self.batch.read_namespaced_job(name, namespace)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise _outside(f"reading Job {namespace}/{name}", err) from err
        except Urllib3Error as err:
            raise _outside(f"reading Job {namespace}/{name}", err) from err
        return self.api.sanitize_for_serialization(job)

    def _configmap_exists(self, name: str, namespace: str) -> bool:
        try:
            self.core.read_namespaced_config_map(name, namespace)
            return True
        except client.ApiException as err:
            if err.status == 404:
                return False
            raise _outside(f"reading ConfigMap {namespace}/{name}", err) from err
        except Urllib3Error as err:
            raise _outside(f"reading ConfigMap {namespace}/{name}", err) from err

    def _pods(self, run: Mapping[str, Any], n: int, namespace: str, kind: _Kind = ATTEMPT) -> list[dict[str, Any]]:
        what = f"listing the pods of {kind.job_name(run_identity(run)[0], n)} in {namespace}"
        try:
            pods = self.core.list_namespaced_pod(namespace, label_selector=kind.selector(run, n))
        except (client.ApiException, Urllib3Error) as err:
            raise _outside(what, err) from err
        return [self.api.sanitize_for_serialization(p) for p in pods.items]

    def _refusal(self, job: Mapping[str, Any]) -> str | None:
        meta = job.get("metadata") or {}
        selector = (f"involvedObject.kind=Job,involvedObject.name={meta.get('name')},"
                    f"involvedObject.uid={meta.get('uid')},reason=FailedCreate")
        try:
            events = self.core.list_namespaced_event(meta.get("namespace"), field_selector=selector)
        except (client.ApiException, Urllib3Error) as err:
            raise _outside(f"reading the Events of Job {meta.get('namespace')}/{meta.get('name')}", err) from err
        return refusal([self.api.sanitize_for_serialization(e) for e in events.items])

    def _log(self, pod: Mapping[str, Any], container: str) -> str | None:
        """A container's log (at most MAX_LOG_BYTES); None when the kubelet no longer has it."""
        meta = pod.get("metadata") or {}
        what = f"reading the {container} log of pod {meta.get('namespace')}/{meta.get('name')}"
        try:
            return self.core.read_namespaced_pod_log(meta.get("name"), meta.get("namespace"), container=container,
                                                     limit_bytes=MAX_LOG_BYTES)
        except client.ApiException as err:
            if err.status in (400, 404):  # the pod or its container's log is gone
                return None
            raise _outside(what, err) from err
        except Urllib3Error as err:
            raise _outside(what, err) from err

    # -- creates (check, then create; 409 = someone else won, adopt)

    def _create_or_adopt(self, namespace: str, job_name: str,
                         build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The Job `job_name`, read, else created from build() (called only then), else a rival's on 409."""
        existing = self._read_job(job_name, namespace)
        if existing is not None:
            return existing
        try:
            return self.api.sanitize_for_serialization(self.batch.create_namespaced_job(namespace, build()))
        except client.ApiException as err:
            if err.status != 409:
                raise _outside(f"creating Job {namespace}/{job_name}", err) from err
            existing = self._read_job(job_name, namespace)
            if existing is None:  # created and deleted in between: let the caller retry
                raise AgentUnavailable(f"Job {namespace}/{job_name} vanished right after a 409") from err
            return existing
        except Urllib3Error as err:
            raise _outside(f"creating Job {namespace}/{job_name}", err) from err

    def _ensure_input(self, run: Mapping[str, Any], n: int, job_input: Mapping[str, Any],
                      job: Mapping[str, Any], kind: _Kind = ATTEMPT) -> None:
        name, _, _ = run_identity(run)
        namespace = job["metadata"]["namespace"]
        cm_name = kind.input_name(name, n)
        if self._configmap_exists(cm_name, namespace):
            return  # the input of an attempt is fixed by its first dispatch
        body = kind.build_input(run, n, job_input, job)
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except client.ApiException as err:
            if err.status != 409:
                raise _outside(f"creating ConfigMap {namespace}/{cm_name}", err) from err
        except Urllib3Error as err:
            raise _outside(f"creating ConfigMap {namespace}/{cm_name}", err) from err

    def _token(self, repo: str, kind: _Kind = ATTEMPT) -> PushToken | None:
        """The attempt's push token, or the plan's read token (None: the plan clones anonymously)."""
        which = "read" if kind.planning else "push"
        try:
            return self.tokens.read_token(repo) if kind.planning else self.tokens.push_token(repo)
        except CredentialError as err:
            raise AgentError(str(err)) from None
        except (ConnectionError, OSError) as err:
            raise AgentUnavailable(f"getting a {which} token for {repo}: {type(err).__name__}") from None

    def _needed_token(self, repo: str, kind: _Kind, what: str) -> PushToken:
        token = self._token(repo, kind)
        if token is None:  # a plan Job made when a read token could be had mounts its Secret
            raise AgentError(f"{what} is mounted by its Job, but no read token can be had for {repo} now")
        return token

    def _ensure_secret(self, run: Mapping[str, Any], n: int, job: Mapping[str, Any], kind: _Kind = ATTEMPT,
                       minted: PushToken | None = None) -> None:
        """Secret `<job>-github` exists, is the Job's, and its token outlives the next resync
        (`minted`: the token the Job was just made for, so it is not minted twice)."""
        name, _, _ = run_identity(run)
        meta = job["metadata"]
        namespace, uid = meta["namespace"], meta.get("uid") or ""
        secret_name = kind.secret_name(name, n)
        volumes = (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or []
        if not any((v.get("secret") or {}).get("secretName") == secret_name for v in volumes):
            return  # an older operator's Job, or a plan without a read token: it mounts none
        key = (namespace, secret_name)
        now = self.clock()
        with self._secrets_lock:
            known = self._secrets.get(key)
        if known is not None and known[0] == uid and (known[1] is None or known[1] - now > TOKEN_REFRESH_MARGIN):
            return
        repo = (meta.get("annotations") or {}).get(ANNOTATION_REPO) or ""
        what = f"the token Secret {namespace}/{secret_name}"
        try:
            current = self.core.read_namespaced_secret(secret_name, namespace)
        except client.ApiException as err:
            if err.status != 404:
                raise _outside(f"reading {what}", err, quiet=True) from None
            current = None
        except Urllib3Error as err:
            raise _outside(f"reading {what}", err, quiet=True) from None
        if current is None:
            token = minted or self._needed_token(repo, kind, what)
            body = kind.build_secret(run, n, token.token, job, token.expires_iso())
            try:
                self.core.create_namespaced_secret(namespace, body)
                expires = token.expires_at
            except client.ApiException as err:
                if err.status != 409:
                    raise _outside(f"creating {what}", err, quiet=True) from None
                return  # a rival made it first; the next call reads its expiry
            except Urllib3Error as err:
                raise _outside(f"creating {what}", err, quiet=True) from None
        else:
            expires = _parse_time((current.metadata.annotations or {}).get(ANNOTATION_TOKEN_EXPIRES))
            if expires is not None and expires - now <= TOKEN_REFRESH_MARGIN:
                token = self._needed_token(repo, kind, what)
                patch = {"metadata": {"annotations": {ANNOTATION_TOKEN_EXPIRES: token.expires_iso()}},
                         "stringData": {kind.token_key: token.token}}
                try:
                    self.core.patch_namespaced_secret(secret_name, namespace, patch)
                except (client.ApiException, Urllib3Error) as err:
                    raise _outside(f"refreshing {what}", err, quiet=True) from None
                expires = token.expires_at
        with self._secrets_lock:
            self._secrets[key] = (uid, expires)

    def _drop_secret(self, run: Mapping[str, Any], n: int, namespace: str, kind: _Kind = ATTEMPT) -> None:
        """The attempt is over: its token leaves the cluster now (best effort; GC would take it later)."""
        secret_name = kind.secret_name(run_identity(run)[0], n)
        with self._secrets_lock:
            self._secrets.pop((namespace, secret_name), None)
        try:
            self.core.delete_namespaced_secret(secret_name, namespace)
        except client.ApiException as err:
            if err.status != 404:
                raise _outside(f"deleting the token Secret {namespace}/{secret_name}", err, quiet=True) from None
        except Urllib3Error as err:
            raise _outside(f"deleting the token Secret {namespace}/{secret_name}", err, quiet=True) from None

    def _settle(self, run: Mapping[str, Any], n: int, job_input: Mapping[str, Any], job: Mapping[str, Any],
                kind: _Kind, minted: PushToken | None = None) -> dict[str, Any]:
        """After create-or-adopt: a running Job gets what it still lacks (input, token); its state."""
        st = job_state(job)
        if st["state"] == RUNNING:
            self._ensure_input(run, n, job_input, job, kind)
            self._ensure_secret(run, n, job, kind, minted)
        created_at = _iso((job.get("metadata") or {}).get("creationTimestamp"))
        return {**st, "startedAt": st.get("startedAt") or created_at}

    # -- attempts

    def dispatch(self, run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Create (or adopt) Job `<run>-a<attempt>`, its input and its token; returns the status.agent.jobs record."""
        name, _, _ = run_identity(run)
        namespace = job_namespace(run, self.cfg.agent)
        job_name = attempt_name(name, attempt)
        job = self._create_or_adopt(namespace, job_name, lambda: build_job(run, attempt, job_input, self.cfg.agent,
                                                                           self.cfg.timeouts))
        st = self._settle(run, attempt, job_input, job, ATTEMPT)
        return record(job_name, attempt, st["state"], st["startedAt"], st.get("finishedAt"))

    def state(self, run: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        """The attempt's state from its Job, with its result once it ended (missing: no such Job)."""
        return self._observe(run, attempt, ATTEMPT)[0]

    def _observe(self, run: Mapping[str, Any], n: int,
                 kind: _Kind) -> tuple[dict[str, Any], Mapping[str, Any] | None, dict[str, Any] | None]:
        """(state, newest pod, its result) of an attempt or a plan; the pod once the Job ended."""
        name, _, _ = run_identity(run)
        namespace = job_namespace(run, self.cfg.agent)
        job = self._read_job(kind.job_name(name, n), namespace)
        st = job_state(job)
        if job is None:
            return st, None, None
        if st["state"] == RUNNING:
            status = job.get("status") or {}
            if not status.get("active") and not status.get("ready"):
                why = self._refusal(job)
                if why is not None:
                    refused = {**st, "state": FAILED, "reason": POD_REFUSED, "message": why, "cause": POD_REFUSED}
                    return refused, None, None
            self._ensure_secret(run, n, job, kind)
            return st, None, None
        pod = newest_pod(self._pods(run, n, namespace, kind))
        result = pod_result(pod, planning=kind.planning) if pod is not None else None
        if result is not None:
            st.pop("message", None)
            st.update({k: result[k] for k in RESULT_FIELDS if k in result})
        if st["state"] == FAILED:
            st.update(failure_cause(job, pod, result, kind.what))
        self._drop_secret(run, n, namespace, kind)
        return st, pod, result

    def cancel(self, run: Mapping[str, Any], attempt: int) -> None:
        """Delete the attempt's Job with Background propagation (its pods go too) and its token; gone is fine."""
        self._delete(run, attempt, ATTEMPT)

    def _delete(self, run: Mapping[str, Any], n: int, kind: _Kind) -> None:
        name, _, _ = run_identity(run)
        namespace = job_namespace(run, self.cfg.agent)
        job_name = kind.job_name(name, n)
        try:
            self.batch.delete_namespaced_job(job_name, namespace, propagation_policy="Background")
        except client.ApiException as err:
            if err.status != 404:
                raise _outside(f"deleting Job {namespace}/{job_name}", err) from err
        except Urllib3Error as err:
            raise _outside(f"deleting Job {namespace}/{job_name}", err) from err
        self._drop_secret(run, n, namespace, kind)

    # -- plans

    def dispatch_plan(self, run: Mapping[str, Any], number: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Create (or adopt) plan Job `<run>-p<number>`, its input and, when a read token can be had, its
        read-token Secret; returns {'name', 'number', 'state', 'startedAt', 'finishedAt'?}."""
        name, _, _ = run_identity(run)
        namespace = job_namespace(run, self.cfg.agent)
        job_name = plan_job_name(name, number)
        minted: list[PushToken | None] = []

        def build() -> dict[str, Any]:  # the token is asked for only when the Job is to be made
            minted.append(self._token(str(job_input.get("repo") or ""), PLAN))
            return build_plan_job(run, number, job_input, self.cfg.agent, self.cfg.plan,
                                  read_token=minted[0] is not None)

        job = self._create_or_adopt(namespace, job_name, build)
        st = self._settle(run, number, job_input, job, PLAN, minted[0] if minted else None)
        return plan_record(job_name, number, st["state"], st["startedAt"], st.get("finishedAt"))

    def plan_state(self, run: Mapping[str, Any], number: int) -> dict[str, Any]:
        """The plan's state (provider.AgentProvider.plan_state): a succeeded one with its checked plan."""
        st, pod, result = self._observe(run, number, PLAN)
        if st["state"] != SUCCEEDED:
            return st
        try:
            if result is None or result.get("outcome") != PLANNED:
                said = "no result" if result is None else f"outcome {result.get('outcome')!r}"
                raise PlanInvalid(f"the plan Job succeeded but its verify step reported {said}, not a plan")
            reported = result.get("plan")
            cut = isinstance(reported, Mapping) and reported.get("cut")
            log = self._log(pod, VERIFY_STEP) if cut and pod is not None else None
            st["plan"] = checked_plan(reported, log)
        except PlanInvalid as err:
            return {**st, "state": FAILED, "outcome": "failed", "reason": PLAN_INVALID, "message": str(err)}
        return st

    def cancel_plan(self, run: Mapping[str, Any], number: int) -> None:
        """Delete the plan's Job (Background) and its read-token Secret; gone is fine."""
        self._delete(run, number, PLAN)
