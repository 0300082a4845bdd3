"""Running the operator inside a test process (a thread with its own loop),
with Deps built by the test. Used by tests and tools/bench_operator.py."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from kubernetes import client

from foundry.operator.deps import Deps
from foundry.operator.kubeio import GROUP, RUNS, VERSION


@contextmanager
def operator_thread(deps: Deps, namespace: str, *, workers: int = 16,
                    startup_timeout: float = 30.0) -> Iterator[None]:
    import kopf

    from foundry.operator import handlers  # noqa: F401 - registers the handlers

    stop = threading.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(kopf.operator(standalone=True, namespaces=[namespace], stop_flag=stop, ready_flag=ready,
                                      memo=kopf.Memo(deps=deps, workers=workers, namespaces=[namespace])))
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            failure.append(err)
            ready.set()

    thread = threading.Thread(target=target, name="foundry-operator", daemon=True)
    thread.start()
    if not ready.wait(startup_timeout) or failure:
        stop.set()
        raise RuntimeError(f"operator did not start: {failure[0] if failure else 'timeout'}")
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        if thread.is_alive():
            raise RuntimeError("operator thread did not stop within 30s")
        if failure:
            raise failure[0]


def get_run(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, RUNS, name)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_phase(api: client.ApiClient, namespace: str, name: str, phase: str, timeout: float = 30.0) -> dict:
    def check() -> dict | None:
        body = get_run(api, namespace, name)
        return body if (body.get("status") or {}).get("phase") == phase else None

    try:
        return wait_for(check, timeout, what=f"{name} to reach {phase}")
    except AssertionError:
        status = (get_run(api, namespace, name).get("status") or {})
        raise AssertionError(f"{name} did not reach {phase} in {timeout}s; status: {status}") from None


def _main() -> None:
    """`python -m tests.support.operator_kit -n NS`: the operator as a separate
    process, for the kill -9 tests (tests.support.operator_process). Its Deps
    are built the production way, by foundry.operator.deps.build_deps from the
    environment (FOUNDRY_CONFIG, FOUNDRY_DATABASE_URL, KUBECONFIG,
    FOUNDRY_LINEAR_API_KEY, FOUNDRY_GITHUB_TOKEN), so a crash test exercises
    the same clients, provider and config as a deployed operator. SIGTERM stops
    it cleanly; a fault point (FOUNDRY_FAULT) ends it with exit code 137."""
    import argparse
    import logging
    import signal

    from foundry.operator.deps import build_deps
    from tests.support import crash_points

    parser = argparse.ArgumentParser()
    parser.add_argument("-n", "--namespace", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    crash_points.install()  # FOUNDRY_FAULT arms a checkpoint; the product alone never dies there
    deps = build_deps()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with operator_thread(deps, args.namespace):
            while not stop.wait(0.5):
                pass
    finally:
        deps.close()


if __name__ == "__main__":
    _main()
