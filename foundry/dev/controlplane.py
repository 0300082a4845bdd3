"""A real local Kubernetes control plane: etcd + kube-apiserver, no kubelet.

This is the pattern controller-runtime calls envtest. Objects are stored and
validated for real (schemas, CEL, RBAC, admission policies, 409 on a second
create), but nothing runs pods, so tests finish Jobs by patching their status.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from foundry.dev.pki import write_pki

ADMIN_USER = "foundry-admin"
# Static human users for tests (and the dev cluster): token "<name>-token".
USERS = ("alice", "bob", "carol", "mallory")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Children get SIGTERM when the process that started them dies, even by
    # SIGKILL, so a crashed test run leaves no etcd or apiserver behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ControlPlaneError(RuntimeError):
    pass


@dataclass
class ControlPlane:
    bin_dir: Path
    workdir: Path
    detach: bool = False  # True for `foundry dev cluster --detach`: survive this process
    etcd_port: int = 0
    peer_port: int = 0
    apiserver_port: int = 0
    admin_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    # ---- paths -------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    # ---- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 90.0) -> "ControlPlane":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.etcd_port = self.etcd_port or free_port()
        self.peer_port = self.peer_port or free_port()
        self.apiserver_port = self.apiserver_port or free_port()
        self.pki = write_pki(self.workdir / "pki")
        tokens = [f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"']
        tokens += [f"{u}-token,{u},{u}" for u in USERS]
        (self.workdir / "tokens.csv").write_text("\n".join(tokens) + "\n")
        self.workdir.joinpath("tokens.csv").chmod(0o600)
        self._start_etcd()
        self.start_apiserver(timeout=timeout)
        self._write_kubeconfig()
        self._write_state()
        return self

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
            preexec_fn=None if self.detach else _die_with_parent,
        )
        log.close()
        self._procs[name] = proc
        return proc

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        # Each start is a fresh cluster: old data carries old ports and keys.
        shutil.rmtree(data, ignore_errors=True)
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync=true",  # tests need speed, not durability
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ],
        )
        self._wait(lambda: self._http_ok(f"{client}/health"), "etcd", 30, "etcd")

    def _apiserver_args(self) -> list[str]:
        p = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--tls-cert-file={p['server_cert']}",
            f"--tls-private-key-file={p['server_key']}",
            f"--client-ca-file={p['ca']}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={p['sa_pub']}",
            f"--service-account-signing-key-file={p['sa_key']}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--api-audiences=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--v=0",
        ]

    def start_apiserver(self, timeout: float = 90.0) -> None:
        if "kube-apiserver" in self._procs and self._procs["kube-apiserver"].poll() is None:
            return
        self._spawn("kube-apiserver", self._apiserver_args())
        self._wait(self._apiserver_ready, "kube-apiserver", timeout, "kube-apiserver")

    def stop_apiserver(self) -> None:
        self._terminate("kube-apiserver")

    def freeze_apiserver(self) -> None:
        """SIGSTOP kube-apiserver: its sockets stay open, connections are accepted, nothing is answered."""
        os.kill(self._procs["kube-apiserver"].pid, signal.SIGSTOP)

    def thaw_apiserver(self) -> None:
        os.kill(self._procs["kube-apiserver"].pid, signal.SIGCONT)

    def stop(self) -> None:
        self._terminate("kube-apiserver")
        self._terminate("etcd")
        state = self.workdir / "state.json"
        if state.exists():
            state.unlink()

    def _terminate(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- readiness ---------------------------------------------------------
    def _wait(self, check, what: str, timeout: float, log_name: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._procs.get(log_name)
            if proc is not None and proc.poll() is not None:
                raise ControlPlaneError(f"{what} exited with {proc.returncode}:\n{self._log_tail(log_name)}")
            if check():
                return
            time.sleep(0.2)
        raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s:\n{self._log_tail(log_name)}")

    def _log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @staticmethod
    def _http_ok(url: str, headers: dict | None = None, context: ssl.SSLContext | None = None) -> bool:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2, context=context) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _apiserver_ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki["ca"]))
        return self._http_ok(
            f"{self.server}/readyz", {"Authorization": f"Bearer {self.admin_token}"}, ctx
        )

    # ---- clients -----------------------------------------------------------
    def _write_kubeconfig(self) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "foundry-local", "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": ADMIN_USER, "user": {"token": self.admin_token}}]
            + [{"name": u, "user": {"token": f"{u}-token"}} for u in USERS],
            "contexts": [{"name": "foundry-local", "context": {"cluster": "foundry-local", "user": ADMIN_USER}}]
            + [{"name": u, "context": {"cluster": "foundry-local", "user": u}} for u in USERS],
            "current-context": "foundry-local",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def _write_state(self) -> None:
        state = {
            "pids": {n: p.pid for n, p in self._procs.items()},
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    def user_token(self, name: str) -> str:
        if name not in USERS:
            raise KeyError(f"no static user {name!r}; known: {', '.join(USERS)}")
        return f"{name}-token"

    def api_client(self, token: str | None = None):
        """A kubernetes ApiClient as the admin (default) or as the bearer of `token`."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = str(self.ca_file)
        cfg.api_key = {"authorization": f"Bearer {token or self.admin_token}"}
        return client.ApiClient(cfg)


def stop_detached(workdir: Path) -> bool:
    """Stop a control plane started with detach=True, from its state file."""
    state_file = workdir / "state.json"
    if not state_file.exists():
        return False
    state = json.loads(state_file.read_text())
    for name in ("kube-apiserver", "etcd"):
        pid = state["pids"].get(name)
        if not pid:
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    state_file.unlink()
    return True
