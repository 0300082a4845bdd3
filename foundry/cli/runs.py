"""`foundry runs list|show|gc`: what runs exist, what one of them is doing, and deleting finished ones.

The pure part turns FoundryRun objects and audit events into rows and
sections; the commands below it only fetch and print. The cluster is the
truth for a run's state; the database adds the audit timeline.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from foundry.cli.kubeaccess import (
    EXIT_NOT_FOUND,
    EXIT_UNREACHABLE,
    REQUEST_TIMEOUT,
    CliError,
    connect,
    kube_errors,
    kube_options,
    resource_type_missing,
)
from foundry.cli.output import Printer, age, parse_time
from foundry.domain.phases import Phase

ISSUE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*-[0-9]+$")
TABLE_HEADERS = ("NAME", "ISSUE", "PHASE", "REPO", "APPROVALS", "PR", "AGE")
WIDE_HEADERS = TABLE_HEADERS + ("ATTEMPT", "REASON", "PR-URL")


# --- pure ---------------------------------------------------------------------


def phase_filter(values: tuple[str, ...]) -> set[str]:
    """Canonical phase names from user input (case-insensitive); ValueError names the valid ones."""
    by_lower = {p.value.lower(): p.value for p in Phase}
    wanted = set()
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "active":
                wanted |= {p.value for p in Phase if p.is_active}
            elif part.lower() in by_lower:
                wanted.add(by_lower[part.lower()])
            else:
                raise ValueError(f"unknown phase {part!r}; phases are: active, {', '.join(p.value for p in Phase)}")
    return wanted


def issue_selector(issue: str) -> str:
    """The label selector for runs of `issue` (a key like ACME-42, or the tracker's issue id)."""
    from foundry.domain.naming import label_value
    from foundry.kube.runs import LABEL_ISSUE_ID, LABEL_ISSUE_KEY

    if ISSUE_KEY.match(issue):
        return f"{LABEL_ISSUE_KEY}={label_value(issue.upper())}"
    return f"{LABEL_ISSUE_ID}={label_value(issue)}"


def run_row(obj: dict[str, Any], *, wide: bool = False, now: datetime | None = None) -> list[Any]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    pr = status.get("pr") or {}
    row = [
        meta.get("name"),
        spec.get("issueKey"),
        status.get("phase") or "Pending",
        status.get("repo") or "",
        (status.get("approvals") or {}).get("summary") or "",
        pr.get("number") or "",
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        row += [spec.get("attempt"), status.get("reason") or "", pr.get("url") or ""]
    return row


def sort_runs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first, like kubectl's default ordering by name is not useful for runs."""
    return sorted(items, key=lambda o: ((o.get("metadata") or {}).get("creationTimestamp") or "", o["metadata"]["name"]))


def event_summary(kind: str, payload: Any) -> str:
    """One line for an audit event; phase changes read as `A → B (reason)`."""
    if kind == "phase" and isinstance(payload, dict):
        text = f"{payload.get('from') or '∅'} → {payload.get('to')}"
        if payload.get("reason"):
            text += f" ({payload['reason']})"
        return text
    if isinstance(payload, dict):
        if isinstance(payload.get("message"), str):
            return _short(payload["message"], 120)  # the operator's own sentence says it best
        # The object uid is for forensics (`-o json`), not for a human's timeline.
        return ", ".join(f"{k}={_short(v)}" for k, v in payload.items()
                         if v not in (None, "", [], {}) and k != "k8s_uid")
    return _short(payload)


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def timeline_rows(events: list[dict[str, Any]]) -> list[list[str]]:
    return [[_clock(e.get("at")), e.get("kind", ""), event_summary(e.get("kind", ""), e.get("payload"))] for e in events]


def _clock(value: Any) -> str:
    at = parse_time(value)
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else str(value or "")


def summary_fields(obj: dict[str, Any], now: datetime | None = None) -> list[tuple[str, Any]]:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    ticket, trigger = spec.get("ticket") or {}, spec.get("trigger") or {}
    created = meta.get("creationTimestamp")
    return [
        ("Name", meta.get("name")),
        ("Namespace", meta.get("namespace")),
        ("Issue", f"{spec.get('issueKey')} ({spec.get('tracker')} {spec.get('issueId')})"),
        ("Title", ticket.get("title")),
        ("URL", ticket.get("url")),
        ("Attempt", spec.get("attempt")),
        ("Phase", status.get("phase") or "Pending"),
        ("Reason", status.get("reason")),
        ("Message", status.get("message")),
        ("Repo", status.get("repo")),
        ("Risk areas", ", ".join(status.get("riskAreas") or [])),
        ("Trigger", " ".join(x for x in (trigger.get("source"), f"by {trigger['actor']}" if trigger.get("actor") else "") if x)),
        ("Created", f"{created} ({age(created, now)} ago)" if created else None),
    ]


def plan_lines(plan: dict[str, Any]) -> list[str]:
    lines = []
    # What an approval binds to: `foundry approve --plan-hash` and `/foundry approve <hash>` name it.
    if plan.get("hash"):
        lines.append(f"Hash: {plan['hash']}")
    if plan.get("revision"):
        lines.append(f"Revision: {plan['revision']}" + (" (re-planned)" if int(plan["revision"]) > 1 else ""))
    if plan.get("goal"):
        lines.append(f"Goal: {plan['goal']}")
    for key, label in (("steps", "Steps"), ("files", "Files"), ("tests", "Tests"), ("outOfScope", "Out of scope")):
        items = plan.get(key) or []
        if items:
            lines.append(f"{label}:")
            lines += [f"  - {item}" for item in items]
    return lines


def decision_rows(objects: list[dict[str, Any]]) -> list[list[Any]]:
    """Every decision recorded for the run (FoundryApproval objects), oldest first."""
    ordered = sorted(objects, key=lambda o: (o.get("metadata") or {}).get("creationTimestamp") or "")
    return [[(o.get("spec") or {}).get("decision"), (o.get("spec") or {}).get("approver"),
             (o.get("spec") or {}).get("source"), short_plan((o.get("spec") or {}).get("planHash")),
             (o.get("metadata") or {}).get("creationTimestamp")] for o in ordered]


def short_plan(plan_hash: Any) -> str:
    """The 12 hex digits people compare by eye; '-' for a decision that names no plan."""
    return str(plan_hash).removeprefix("sha256:")[:12] if plan_hash else "-"


def counted_rows(status_approvals: dict[str, Any]) -> list[list[Any]]:
    """The approvers the operator counted towards the policy (config names, with their roles)."""
    return [[a.get("name"), ", ".join(a.get("roles") or []), a.get("source"), a.get("at")]
            for a in status_approvals.get("approvers") or []]


def job_rows(agent: dict[str, Any]) -> list[list[Any]]:
    return [[j.get("attempt"), j.get("name"), j.get("state"), (j.get("headSha") or "")[:12],
             j.get("startedAt"), j.get("finishedAt")] for j in agent.get("jobs") or []]


def pr_fields(pr: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("Number", pr.get("number")),
        ("URL", pr.get("url")),
        ("Branch", pr.get("branch")),
        ("Head", (pr.get("headSha") or "")[:12]),
        ("State", f"{pr.get('state')}{' (merged)' if pr.get('merged') else ''}" if pr.get("state") else None),
        ("Checks", pr.get("checks")),
        ("Review", pr.get("review")),
    ]


def condition_rows(conditions: list[dict[str, Any]]) -> list[list[Any]]:
    return [[c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("lastTransitionTime")]
            for c in conditions]


# --- I/O ----------------------------------------------------------------------


def list_run_objects(api: Any, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
    """FoundryRuns in `namespace` (None: every namespace) matching the label selector."""
    from kubernetes import client

    from foundry.kube.crds import GROUP, VERSION
    from foundry.kube.runs import PLURAL

    custom = client.CustomObjectsApi(api)
    kwargs: dict[str, Any] = {"_request_timeout": REQUEST_TIMEOUT}
    if selector:
        kwargs["label_selector"] = selector
    if namespace is None:
        return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)["items"]
    return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)["items"]


def get_run_object(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes import client

    from foundry.kube.crds import GROUP, VERSION
    from foundry.kube.runs import PLURAL

    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)
    except client.ApiException as exc:
        if exc.status == 404 and not resource_type_missing(str(exc.body)):
            return None
        raise


def find_run(api: Any, namespace: str, ref: str) -> dict[str, Any]:
    """The run named `ref`, or the latest attempt for the issue key `ref`; CliError if neither exists."""
    obj = get_run_object(api, namespace, ref) if re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ref) else None
    if obj is not None:
        return obj
    if ISSUE_KEY.match(ref):
        runs = list_run_objects(api, namespace, issue_selector(ref))
        if runs:
            return max(runs, key=lambda o: (o.get("spec") or {}).get("attempt") or 0)
    raise CliError(f"no FoundryRun {ref!r} in namespace {namespace} (`foundry runs list -n {namespace}` shows the runs)",
                   EXIT_NOT_FOUND)


def approval_objects(api: Any, namespace: str, run: str) -> list[dict[str, Any]]:
    from kubernetes import client

    from foundry.kube.approvals import LABEL_RUN, PLURAL
    from foundry.kube.crds import GROUP, VERSION

    return client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, label_selector=f"{LABEL_RUN}={run}", _request_timeout=REQUEST_TIMEOUT)["items"]


def read_timeline(namespace: str, name: str, database_url: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """(audit events oldest first, a note when the database cannot supply them)."""
    from sqlalchemy.exc import SQLAlchemyError

    from foundry.db.audit import audit_events, audit_report
    from foundry.db.audit_chain import AuditKeyError
    from foundry.db.claims import get_run
    from foundry.db.engine import DatabaseConfigError, make_engine

    try:
        engine = make_engine(database_url)
    except DatabaseConfigError as exc:
        return [], f"timeline unavailable: {exc}"
    try:
        record = get_run(engine, namespace, name)
        if record is None:
            return [], "no audit events: the database has no row for this run (has the operator seen it yet?)"
        links = audit_events(engine, record.id)
        report = audit_report(engine, record.id)
    except SQLAlchemyError as exc:
        return [], f"timeline unavailable: cannot read the database at {engine.url!r}: {getattr(exc, 'orig', exc)}"
    except AuditKeyError as exc:
        return [], f"timeline unavailable: {exc}"
    finally:
        engine.dispose()
    events = [{"seq": l.seq, "at": l.at.isoformat(), "kind": l.kind, "payload": l.payload} for l in links]
    note = None if report.intact else f"WARNING: the audit trail does not verify: {report.summary()}"
    return events, note


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'7d', '12h', '30m', '90s' or bare seconds → seconds."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a duration; use e.g. 7d, 12h, 30m or a number of seconds")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# --- commands -----------------------------------------------------------------


@click.group()
def runs() -> None:
    """List FoundryRuns and show what one of them is doing."""


@runs.command("list")
@kube_options
@click.option("-A", "--all-namespaces", is_flag=True, help="List runs in every namespace.")
@click.option("--phase", "phases", multiple=True, metavar="PHASE",
              help="Only runs in this phase (repeatable or comma-separated; `active` means every active phase).")
@click.option("--issue", default=None, metavar="KEY|ID", help="Only runs of this issue (key like ACME-42, or the tracker's id).")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "wide", "json", "yaml"]), default="table",
              show_default=True, help="Output format.")
def list_cmd(target: Any, all_namespaces: bool, phases: tuple[str, ...], issue: str | None, fmt: str) -> None:
    """List FoundryRuns, oldest first.

    Exit status: 0 (also when nothing matches), 2 bad option, 3 cluster unreachable.
    """
    try:
        wanted = phase_filter(phases)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--phase") from None
    api, namespace = connect(target)
    with kube_errors(api.configuration.host):
        items = list_run_objects(api, None if all_namespaces else namespace, issue_selector(issue) if issue else None)
    items = sort_runs([o for o in items if not wanted or ((o.get("status") or {}).get("phase") or "Pending") in wanted])
    out = Printer()
    if fmt in ("json", "yaml"):
        out.data({"apiVersion": "v1", "kind": "List", "items": items}, fmt)
        return
    if not items:
        where = "any namespace" if all_namespaces else f"namespace {namespace}"
        click.echo(f"No FoundryRuns found in {where}.", err=True)
        return
    wide = fmt == "wide"
    headers = list(WIDE_HEADERS if wide else TABLE_HEADERS)
    rows = [run_row(o, wide=wide) for o in items]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
        rows = [[o["metadata"].get("namespace"), *r] for o, r in zip(items, rows)]
    out.table(headers, rows)


@runs.command("show")
@click.argument("run")
@kube_options
@click.option("--database-url", envvar="FOUNDRY_DATABASE_URL", default=None,
              help="Database holding the audit trail. [env: FOUNDRY_DATABASE_URL, else the local SQLite file]")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json", "yaml"]), default="text",
              show_default=True, help="Output format.")
def show_cmd(run: str, target: Any, database_url: str | None, fmt: str) -> None:
    """Show RUN (a run name, or an issue key for its latest run): plan, approvals,
    agent attempts, pull request, conditions and the audit timeline.

    Exit status: 0, 1 no such run, 3 cluster unreachable. The database being
    unreachable is reported in the output but is not an error: the run's state
    lives in the cluster.
    """
    api, namespace = connect(target)
    with kube_errors(api.configuration.host):
        obj = find_run(api, namespace, run)
        name = obj["metadata"]["name"]
        approvals = approval_objects(api, namespace, name)
    events, note = read_timeline(namespace, name, database_url)
    leader = operator_leader(api, namespace)
    out = Printer()
    if fmt in ("json", "yaml"):
        out.data({"run": obj, "approvals": approvals, "timeline": events, "timelineNote": note,
                  "operatorLeader": leader}, fmt)
        return
    render_run(out, obj, approvals, events, note)
    if leader:
        out.section("Operator")
        out.line(f"  leading: {leader}")


def operator_leader(api: Any, namespace: str) -> str | None:
    """Who holds the operator's Lease (leader election) in the run's namespace, where the chart
    puts it by default; None when there is none, or it cannot be read (it is a courtesy here)."""
    from foundry.operator.leaseio import LeaseUnavailable, holder_of

    try:
        record = holder_of(api, namespace, "foundry-operator")
    except LeaseUnavailable:
        return None
    if record is None:
        return None
    return record.holder or "nobody (the Lease was released; a standby takes it within seconds)"


def render_run(out: Printer, obj: dict[str, Any], approval_objects_: list[dict[str, Any]],
               events: list[dict[str, Any]], note: str | None) -> None:
    status = obj.get("status") or {}
    out.section("Run")
    out.fields(summary_fields(obj))
    out.section("Plan")
    for line in plan_lines(status.get("plan") or {}) or ["(no plan yet)"]:
        out.line(f"  {line}")
    questions = status.get("questions") or []
    if questions:
        out.section("Questions")
        for q in questions:
            out.line(f"  - {q}")
    approvals = status.get("approvals") or {}
    summary = approvals.get("summary")
    out.section(f"Approvals{f' ({summary} counted)' if summary else ''}")
    decisions = decision_rows(approval_objects_)
    counted = counted_rows(approvals)
    if decisions:
        out.table(["DECISION", "BY", "SOURCE", "PLAN", "AT"], decisions, title="  recorded:")
    if counted:
        out.table(["APPROVER", "ROLES", "SOURCE", "AT"], counted, title="  counted by the policy:")
    if not decisions and not counted:
        out.line("  (none)")
    agent = status.get("agent") or {}
    out.section("Agent attempts")
    jobs = job_rows(agent)
    if jobs:
        out.table(["ATTEMPT", "JOB", "STATE", "HEAD", "STARTED", "FINISHED"], jobs)
    else:
        out.line("  (none)")
    out.section("Pull request")
    if status.get("pr"):
        out.fields(pr_fields(status["pr"]))
    else:
        out.line("  (none)")
    out.section("Conditions")
    conditions = condition_rows(status.get("conditions") or [])
    if conditions:
        out.table(["TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"], conditions)
    else:
        out.line("  (none)")
    out.section("Timeline")
    if events:
        out.table(["AT", "EVENT", "DETAIL"], timeline_rows(events))
    elif not note:
        out.line("  (no audit events yet)")
    if note:
        out.line(f"  {note}")


__all__ = ["runs", "find_run", "list_run_objects", "read_timeline", "EXIT_UNREACHABLE"]


@runs.command("gc")
@kube_options
@click.option("--older-than", default="7d", show_default=True, metavar="DURATION",
              help="Delete runs that finished longer ago than this (7d, 12h, 30m, seconds).")
@click.option("--database-url", envvar="FOUNDRY_DATABASE_URL", default=None,
              help="Database holding the runs' finish times. [env: FOUNDRY_DATABASE_URL, else the local SQLite file]")
@click.option("--max", "max_deletes", type=click.IntRange(0), default=1000, show_default=True,
              help="Delete at most this many runs.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
def gc_cmd(target: Any, older_than: str, database_url: str | None, max_deletes: int, dry_run: bool) -> None:
    """Delete finished FoundryRuns of the namespace after their retention time.

    The database rows and audit trails stay (`foundry runs show` still reads the
    timeline of a deleted run by name). The operator does the same on a timer
    (`retention.runs_seconds`). Exit status: 0, 2 bad option, 3 cluster unreachable.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from foundry.db.engine import DatabaseConfigError, make_engine
    from foundry.operator.retention import collect_finished_runs

    try:
        seconds = parse_duration(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    api, namespace = connect(target)
    try:
        engine = make_engine(database_url)
    except DatabaseConfigError as exc:
        raise CliError(f"cannot read finish times: {exc}", EXIT_UNREACHABLE) from None
    try:
        with kube_errors(api.configuration.host):
            report = collect_finished_runs(api, engine, namespace, older_than=timedelta(seconds=seconds),
                                           now=datetime.now(timezone.utc), max_deletes=max_deletes,
                                           dry_run=dry_run)
    except SQLAlchemyError as exc:
        raise CliError(f"cannot read finish times from the database at {engine.url!r}: "
                       f"{getattr(exc, 'orig', exc)}", EXIT_UNREACHABLE) from None
    finally:
        engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    for name in report.deleted:
        click.echo(f"{verb} {namespace}/{name}")
    click.echo(f"{verb} {len(report.deleted)} finished run(s) in {namespace}; "
               f"kept {report.kept} finished within {older_than}; listed {report.listed}", err=True)
