"""The `job` provider: one Kubernetes Job per attempt.

Idempotent by name: the input ConfigMap and the Job are read before they are
created, and a 409 on create means another operator (or our own earlier,
crashed self) created it first, so it is adopted. A Job is never created twice
for one attempt, and never replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes import client
from urllib3.exceptions import HTTPError as Urllib3Error

from foundry.agents.base import (FAILED, MISSING, RUNNING, SUCCEEDED, AgentError, AgentUnavailable, attempt_name,
                                 record, run_identity, utc_iso)
from foundry.agents.job_manifest import build_input_configmap, build_job, input_configmap_name
from foundry.config import FoundryConfig


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


def _outside(what: str, err: Exception) -> Exception:
    """Map a client error: overload/outage → AgentUnavailable (retry), the rest → AgentError (say why)."""
    if isinstance(err, client.ApiException):
        if err.status in (429, 500, 502, 503, 504) or err.status == 0:
            return AgentUnavailable(f"{what}: API server answered {err.status} {err.reason}")
        return AgentError(f"{what}: {err.status} {err.reason}: {_status_message(err)}")
    return AgentUnavailable(f"{what}: {err}")


def _status_message(err: client.ApiException) -> str:
    """The API server's Status.message (what was wrong), else the raw body."""
    try:
        return str(json.loads(err.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.body or err.reason)


class JobProvider:
    """Agent attempts as batch/v1 Jobs in the run's namespace, through an explicit ApiClient."""

    def __init__(self, cfg: FoundryConfig, api: client.ApiClient) -> None:
        self.cfg = cfg
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

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

    # -- creates (check, then create; 409 = someone else won, adopt)

    def _ensure_input(self, run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> None:
        name, namespace, _ = run_identity(run)
        cm_name = input_configmap_name(name, attempt)
        if self._configmap_exists(cm_name, namespace):
            return  # the input of an attempt is fixed by its first dispatch
        body = build_input_configmap(run, attempt, job_input)
        try:
            self.core.create_namespaced_config_map(namespace, body)
        except client.ApiException as err:
            if err.status != 409:
                raise _outside(f"creating ConfigMap {namespace}/{cm_name}", err) from err
        except Urllib3Error as err:
            raise _outside(f"creating ConfigMap {namespace}/{cm_name}", err) from err

    def dispatch(self, run: Mapping[str, Any], attempt: int, job_input: Mapping[str, Any]) -> dict[str, Any]:
        """Create (or adopt) Job `<run>-a<attempt>` and its input; returns the status.agent.jobs record."""
        name, namespace, _ = run_identity(run)
        job_name = attempt_name(name, attempt)
        existing = self._read_job(job_name, namespace)
        if existing is None:
            self._ensure_input(run, attempt, job_input)
            body = build_job(run, attempt, job_input, self.cfg.agent, self.cfg.timeouts)
            try:
                created = self.batch.create_namespaced_job(namespace, body)
                existing = self.api.sanitize_for_serialization(created)
            except client.ApiException as err:
                if err.status != 409:
                    raise _outside(f"creating Job {namespace}/{job_name}", err) from err
                existing = self._read_job(job_name, namespace)
                if existing is None:  # created and deleted in between: let the caller retry
                    raise AgentUnavailable(f"Job {namespace}/{job_name} vanished right after a 409") from err
            except Urllib3Error as err:
                raise _outside(f"creating Job {namespace}/{job_name}", err) from err
        st = job_state(existing)
        created_at = _iso((existing.get("metadata") or {}).get("creationTimestamp"))
        return record(job_name, attempt, st["state"], st.get("startedAt") or created_at, st.get("finishedAt"))

    def state(self, run: Mapping[str, Any], attempt: int) -> dict[str, Any]:
        """The attempt's state from its Job's status conditions (missing: no such Job)."""
        name, namespace, _ = run_identity(run)
        return job_state(self._read_job(attempt_name(name, attempt), namespace))

    def cancel(self, run: Mapping[str, Any], attempt: int) -> None:
        """Delete the attempt's Job with Background propagation (its pods go too); gone already is fine."""
        name, namespace, _ = run_identity(run)
        job_name = attempt_name(name, attempt)
        try:
            self.batch.delete_namespaced_job(job_name, namespace, propagation_policy="Background")
        except client.ApiException as err:
            if err.status != 404:
                raise _outside(f"deleting Job {namespace}/{job_name}", err) from err
        except Urllib3Error as err:
            raise _outside(f"deleting Job {namespace}/{job_name}", err) from err
