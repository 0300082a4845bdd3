"""The locally built images, imported into the real node's containerd, run as pods.

Each runs under a `restricted` Pod Security context (non-root, no capabilities,
read-only root, RuntimeDefault seccomp) with emptyDirs where the chart mounts
them, and `imagePullPolicy: Never`: the kubelet must find the image under the
chart's name in containerd, since nothing may be pulled.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from foundry import __version__
from foundry.dev.images import agent_cli_versions, ensure_images
from tests.support.node_pods import unique, wait_pod

pytestmark = pytest.mark.timeout(3600)


def _security(uid: int) -> client.V1SecurityContext:
    return client.V1SecurityContext(run_as_non_root=True, run_as_user=uid, run_as_group=uid,
                                    allow_privilege_escalation=False, read_only_root_filesystem=True,
                                    capabilities=client.V1Capabilities(drop=["ALL"]),
                                    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))


def _pod(name: str, image: str, uid: int, args: list[str] | None, mounts: dict[str, str],
         env: dict[str, str] | None = None, command: list[str] | None = None) -> client.V1Pod:
    volumes = [client.V1Volume(name=v, empty_dir=client.V1EmptyDirVolumeSource()) for v in mounts]
    container = client.V1Container(
        name="main", image=image, image_pull_policy="Never", args=args, command=command,
        env=[client.V1EnvVar(name=k, value=v) for k, v in (env or {}).items()],
        security_context=_security(uid),
        volume_mounts=[client.V1VolumeMount(name=v, mount_path=p) for v, p in mounts.items()])
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[container], volumes=volumes, restart_policy="Never",
                              automount_service_account_token=False, termination_grace_period_seconds=1,
                              security_context=client.V1PodSecurityContext(fs_group=uid)))


@pytest.fixture(scope="module")
def imported(real_node):
    return {ref: real_node.import_image(tar, ref) for ref, tar in ensure_images().items()}


def _logs_when_done(core, ns: str, name: str) -> str:
    wait_pod(core, ns, name, ("Succeeded",), timeout=120)
    return core.read_namespaced_pod_log(name, ns)


def test_foundry_image_runs_as_the_chart_runs_it(real_node, node_namespace, imported):
    ref = next(r for r in imported if "/foundry:" in r)
    with real_node.api_client() as api:
        core = client.CoreV1Api(api)
        name = unique("foundry")
        # The chart's migration hook: `foundry db upgrade`, here on SQLite in the /tmp emptyDir.
        core.create_namespaced_pod(node_namespace, _pod(
            name, ref, 10001, ["db", "upgrade"], {"tmp": "/tmp"},
            env={"FOUNDRY_DATABASE_URL": "sqlite:////tmp/foundry.db"}))
        assert "(head)" in _logs_when_done(core, node_namespace, name)
        name = unique("version")
        core.create_namespaced_pod(node_namespace, _pod(name, ref, 10001, ["version"], {"tmp": "/tmp"}))
        assert _logs_when_done(core, node_namespace, name).strip() == __version__


def test_agent_image_runs_the_pinned_clis_restricted(real_node, node_namespace, imported):
    ref = next(r for r in imported if "/foundry-agent:" in r)
    pins = agent_cli_versions()
    script = ('mkdir -p "$HOME" && id -u && claude --version && codex --version && aider --version '
              "&& git --version && foundry agent run --help >/dev/null && echo entrypoint-ok")
    with real_node.api_client() as api:
        core = client.CoreV1Api(api)
        name = unique("agent")
        core.create_namespaced_pod(node_namespace, _pod(name, ref, 10001, None,
                                                        {"work": "/foundry/work", "tmp": "/tmp"},
                                                        command=["/bin/sh", "-c", script]))
        out = _logs_when_done(core, node_namespace, name).splitlines()
    assert out[0] == "10001"
    assert out[1].startswith(pins["claude-code"])
    assert out[2] == f"codex-cli {pins['codex']}" and out[3] == f"aider {pins['aider']}"
    assert out[-1] == "entrypoint-ok"


def test_postgres_image_serves_restricted_as_999(real_node, node_namespace, imported):
    ref = next(r for r in imported if "postgres" in r)
    with real_node.api_client() as api:
        core = client.CoreV1Api(api)
        name = unique("pg")
        pod = _pod(name, ref, 999, None, {"data": "/var/lib/postgresql/data", "run": "/var/run/postgresql",
                                          "tmp": "/tmp"},
                   env={"POSTGRES_PASSWORD": "s3cret", "POSTGRES_USER": "foundry", "POSTGRES_DB": "foundry",
                        "PGDATA": "/var/lib/postgresql/data/pgdata"})
        pod.spec.containers[0].readiness_probe = client.V1Probe(
            _exec=client.V1ExecAction(command=["pg_isready", "-U", "foundry", "-h", "127.0.0.1"]),
            period_seconds=1)
        core.create_namespaced_pod(node_namespace, pod)
        wait_pod(core, node_namespace, name, ("Running",), timeout=120)
        logs = core.read_namespaced_pod_log(name, node_namespace)
    assert "initialising" in logs and "ready to accept connections" in logs
