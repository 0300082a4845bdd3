"""The keyed audit chain: HMAC links and a keyed head record, so that neither an
edit nor a cut-off tail goes unnoticed by someone without the key, while trails
written before a key was set still verify."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from sqlalchemy import Engine, select, text

from foundry.db import audit, claims, migrate
from foundry.db.audit_chain import (ENV_KEY, ENV_PREVIOUS_KEYS, AuditKey, AuditKeyError, Keyring, event_hash,
                                    keyring_from_env)
from foundry.db.engine import create_schema, make_engine
from foundry.db.models import AuditEvent

BACKENDS = [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
KEY_A = "a" * 16 + "-first-audit-key"
KEY_B = "b" * 16 + "-second-audit-key"


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        migrate.upgrade(url)
        eng = make_engine(url)
    else:
        eng = make_engine(request.getfixturevalue("sqlite_url"))
        create_schema(eng)
    yield eng
    eng.dispose()


def _run(engine: Engine, issue: str = "iss-1") -> int:
    return claims.claim_run(engine, tracker="linear", issue_id=issue, issue_key="ACME-1", namespace="ns",
                            ticket_updated_at=T0, name_for=lambda a: f"{issue}-a{a}").run_id


def _walk(engine: Engine, run_id: int) -> None:
    for phase in ("Analysing", "WaitingApproval", "Approved", "AgentRunning"):
        audit.record_phase(engine, run_id, phase, "step")


def test_keyed_links_and_head(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, KEY_A)
    run_id = _run(engine)
    _walk(engine, run_id)
    events = audit.audit_events(engine, run_id)
    key = AuditKey.of(KEY_A)
    assert {e.key_id for e in events} == {key.key_id}
    assert events[-1].hash == event_hash(events[-1].prev_hash, 4, "phase", events[-1].payload, events[-1].at,
                                         key=key, run_id=run_id)
    head = audit.audit_head(engine, run_id)
    assert head is not None and (head.count, head.last_hash) == (4, events[-1].hash)
    report = audit.audit_report(engine, run_id)
    assert report.intact and report.keyed and report.events == 4, report


def test_a_cut_off_tail_is_reported(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, KEY_A)
    run_id = _run(engine)
    _walk(engine, run_id)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM foundry_audit_events WHERE run_id = :r AND seq >= 3"), {"r": run_id})
    report = audit.audit_report(engine, run_id)
    assert not report.intact
    assert report.problems == ("truncated: the head records 4 event(s), 2 remain",)
    assert not audit.verify_audit_chain(engine, run_id)


def test_moving_the_head_back_needs_the_key(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, KEY_A)
    run_id = _run(engine)
    _walk(engine, run_id)
    second = audit.audit_events(engine, run_id)[1]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM foundry_audit_events WHERE run_id = :r AND seq >= 3"), {"r": run_id})
        conn.execute(text("UPDATE foundry_audit_heads SET count = 2, last_hash = :h WHERE run_id = :r"),
                     {"h": second.hash, "r": run_id})
    assert audit.audit_report(engine, run_id).problems == ("the head record does not match its MAC (altered)",)


def test_an_event_forged_without_the_key_is_reported(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, KEY_A)
    run_id = _run(engine)
    _walk(engine, run_id)
    last = audit.audit_events(engine, run_id)[-1]
    at = T0.replace(hour=13)
    payload = {"from": "AgentRunning", "to": "Complete", "reason": "merged", "detail": None}
    forged_unkeyed = event_hash(last.hash, 5, "phase", payload, at)
    forged_other_key = event_hash(last.hash, 5, "phase", payload, at, key=AuditKey.of(KEY_B), run_id=run_id)
    with engine.begin() as conn:
        conn.execute(AuditEvent.__table__.insert().values(run_id=run_id, seq=5, kind="phase", payload=payload, at=at,
                                                          prev_hash=last.hash, hash=forged_unkeyed, key_id=None))
    assert audit.audit_report(engine, run_id).problems == (
        "event 5 is unkeyed after keyed events (written without the key)",)
    with engine.begin() as conn:
        conn.execute(text("UPDATE foundry_audit_events SET hash = :h, key_id = :k WHERE run_id = :r AND seq = 5"),
                     {"h": forged_other_key, "k": last.key_id, "r": run_id})
    assert audit.audit_report(engine, run_id).problems == ("event 5 does not match its hash (altered)",)


def test_an_unkeyed_trail_still_verifies_and_is_continued_keyed(engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    run_id = _run(engine)
    audit.record_phase(engine, run_id, "Analysing", "before the key")
    audit.record_phase(engine, run_id, "WaitingApproval", "before the key")
    legacy = audit.audit_report(engine, run_id)
    assert legacy.intact and not legacy.keyed and audit.audit_head(engine, run_id) is None
    assert "unkeyed" in legacy.summary()

    monkeypatch.setenv(ENV_KEY, KEY_A)
    audit.record_phase(engine, run_id, "Approved", "after the key")
    events = audit.audit_events(engine, run_id)
    assert [e.key_id is None for e in events] == [True, True, False]
    report = audit.audit_report(engine, run_id)
    assert report.intact and report.events == 3, report
    assert audit.audit_head(engine, run_id).count == 3  # the head vouches for the older links too
    # ...so cutting the tail now shows, old links included.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM foundry_audit_events WHERE run_id = :r AND seq = 3"), {"r": run_id})
    assert audit.audit_report(engine, run_id).problems == ("truncated: the head records 3 event(s), 2 remain",)


def test_rotation_keeps_old_links_verifiable(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, KEY_A)
    run_id = _run(engine)
    audit.record_phase(engine, run_id, "Analysing", "key A")
    monkeypatch.setenv(ENV_KEY, KEY_B)
    monkeypatch.setenv(ENV_PREVIOUS_KEYS, KEY_A)
    audit.record_phase(engine, run_id, "WaitingApproval", "key B")
    assert audit.audit_report(engine, run_id).intact
    monkeypatch.delenv(ENV_PREVIOUS_KEYS)
    problems = audit.audit_report(engine, run_id).problems
    assert len(problems) == 1 and "a key this verifier does not hold" in problems[0], problems


def test_short_keys_are_refused_with_the_reason() -> None:
    with pytest.raises(AuditKeyError, match="at least 16 characters"):
        keyring_from_env({ENV_KEY: "short"})
    ring = keyring_from_env({ENV_KEY: KEY_A, ENV_PREVIOUS_KEYS: f" {KEY_B} ,"})
    assert ring.current == AuditKey.of(KEY_A) and ring.previous == (AuditKey.of(KEY_B),)
    assert "secret" not in repr(ring.current) and KEY_A not in repr(ring)
    assert Keyring().find(AuditKey.of(KEY_A).key_id) is None


def test_a_keyed_link_is_bound_to_its_run(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events copied from another run's trail do not verify there (the run id is in the MAC)."""
    monkeypatch.setenv(ENV_KEY, KEY_A)
    first, second = _run(engine, "iss-1"), _run(engine, "iss-2")
    audit.record_phase(engine, first, "Analysing", "step")
    audit.record_phase(engine, second, "Analysing", "step")
    with engine.begin() as conn:
        src = conn.execute(select(AuditEvent.hash).where(AuditEvent.run_id == first)).scalar_one()
        conn.execute(text("UPDATE foundry_audit_events SET hash = :h WHERE run_id = :r"), {"h": src, "r": second})
        conn.execute(text("UPDATE foundry_audit_heads SET last_hash = :h, mac = "
                          "(SELECT mac FROM foundry_audit_heads WHERE run_id = :f) WHERE run_id = :r"),
                     {"h": src, "r": second, "f": first})
    assert not audit.audit_report(engine, second).intact


def test_sealing_gives_old_trails_a_head_and_refuses_broken_ones(engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEY, raising=False)
    good, broken, empty = _run(engine, "good"), _run(engine, "broken"), _run(engine, "empty")
    _walk(engine, good)
    _walk(engine, broken)
    with engine.begin() as conn:
        conn.execute(text("UPDATE foundry_audit_events SET kind = 'forged' WHERE run_id = :r AND seq = 2"),
                     {"r": broken})
    with pytest.raises(AuditKeyError, match="needs the audit key"):
        audit.seal_unkeyed_trails(engine)

    monkeypatch.setenv(ENV_KEY, KEY_A)
    report = audit.seal_unkeyed_trails(engine, batch_size=2)
    assert (report.sealed, report.broken) == (1, [broken])
    assert audit.audit_head(engine, good).count == 4 and audit.audit_head(engine, empty) is None
    assert audit.audit_report(engine, good).intact
    assert audit.seal_unkeyed_trails(engine).sealed == 0  # again: nothing left to seal
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM foundry_audit_events WHERE run_id = :r AND seq = 4"), {"r": good})
    assert audit.audit_report(engine, good).problems == ("truncated: the head records 4 event(s), 3 remain",)


def test_seal_audit_command(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from foundry.cli.main import cli

    eng = make_engine(sqlite_url)
    create_schema(eng)
    monkeypatch.delenv(ENV_KEY, raising=False)
    _walk(eng, _run(eng))
    eng.dispose()
    refused = CliRunner().invoke(cli, ["db", "seal-audit", "--database-url", sqlite_url])
    assert refused.exit_code == 1 and f"set {ENV_KEY}" in refused.output, refused.output
    sealed = CliRunner().invoke(cli, ["db", "seal-audit", "--database-url", sqlite_url], env={ENV_KEY: KEY_A})
    assert sealed.exit_code == 0 and "sealed 1 trail(s)" in sealed.output, sealed.output
