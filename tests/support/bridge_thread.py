"""The bridge served from a thread of the test process, against the real API
server and database: what `foundry bridge` runs, without a process to spawn.

    with BridgeThread(bridge_settings(namespace, pg_url, kubeconfig, github_secret="s")) as bridge:
        github.set_webhook_url(bridge.github_webhook_url)

The operator tests use it to put the bridge between the GitHub stand-in and
the operator; tests that need a separate process use tests.support.bridge_kit.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from foundry.bridge.app import Bridge
from foundry.bridge.backend import RealBackend
from foundry.bridge.mapping import TriggerRule
from foundry.bridge.settings import Settings
from foundry.bridge.verify import DEFAULT_TOLERANCE_SECONDS
from foundry.dev.server_thread import ServerThread


def bridge_settings(namespace: str, database_url: str, kubeconfig: str | Path, *, github_secret: str = "",
                    linear_secret: str = "", workers: int = 4) -> Settings:
    # The threaded command path is the reference; the lean intake path needs its
    # own event-loop pool and adds nothing to what these tests exercise.
    return Settings(namespace=namespace,
                    linear_secrets=(linear_secret,) if linear_secret else (),
                    github_secrets=(github_secret,) if github_secret else (),
                    tolerance_seconds=DEFAULT_TOLERANCE_SECONDS, trigger=TriggerRule(), workers=workers,
                    database_url=database_url, kubeconfig=str(kubeconfig), lean=False)


class BridgeThread(ServerThread):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.backend: RealBackend | None = None
        self.bridge: Bridge | None = None

    def build_app(self) -> web.Application:
        s = self.settings
        self.backend = RealBackend.from_settings(s.database_url, s.kubeconfig, s.namespace, s.workers)
        self.bridge = Bridge(s, self.backend)
        return self.bridge.application()

    @property
    def github_webhook_url(self) -> str:
        return f"{self.url}/webhooks/github"

    def stop(self) -> None:
        # The app's cleanup drains the bridge's thread pool; only then may the
        # backend (its engine and API client) go.
        try:
            super().stop()
        finally:
            if self.backend is not None:
                self.backend.close()
                self.backend = None
