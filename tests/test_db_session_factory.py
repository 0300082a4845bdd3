"""One sessionmaker per engine (foundry.db.engine.session_factory).

Every query helper asks for its engine's sessionmaker; making a new one per
call built a new Session subclass each time, which SQLAlchemy wires into every
event listener, a CPU cost per query the operator's intake paid about five
times per run.
"""

from __future__ import annotations

import gc
import threading
import weakref

from sqlalchemy.orm import Session, sessionmaker

from foundry.db import claims
from foundry.db.engine import create_schema, make_engine, session_factory


def test_an_engine_has_one_sessionmaker(sqlite_url: str) -> None:
    engine, other = make_engine(sqlite_url), make_engine(sqlite_url)
    try:
        first = session_factory(engine)
        assert session_factory(engine) is first
        assert session_factory(other) is not first
        assert first.kw["expire_on_commit"] is False and first.kw["bind"] is engine
        given = sessionmaker(bind=engine)
        assert session_factory(given) is given  # a caller's own sessionmaker is used as it is
    finally:
        engine.dispose()
        other.dispose()


def test_query_helpers_make_no_session_class_per_call(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        create_schema(engine)
        claims.get_run(engine, "ns", "warm-up")
        gc.collect()
        before = len(Session.__subclasses__())
        classes = set()
        for i in range(50):
            assert claims.get_run(engine, "ns", f"run-{i}") is None
            classes.add(session_factory(engine).class_)
        assert len(classes) == 1
        assert len(Session.__subclasses__()) == before
    finally:
        engine.dispose()


def test_threads_asking_at_once_share_one(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    barrier = threading.Barrier(16)
    got: list[sessionmaker] = []
    lock = threading.Lock()

    def ask() -> None:
        barrier.wait()
        factory = session_factory(engine)
        with lock:
            got.append(factory)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(got) == 16 and len({id(f) for f in got}) == 1
    finally:
        engine.dispose()


def test_an_engine_nobody_holds_is_still_collected(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    session_factory(engine)
    gone = weakref.ref(engine)
    engine.dispose()
    del engine
    gc.collect()
    assert gone() is None
