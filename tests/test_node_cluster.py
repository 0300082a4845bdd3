"""The real single-node cluster: pods, Jobs, OOM, Services, DNS, PodSecurity
and a teardown that leaves nothing behind (foundry/dev/node.py)."""

from __future__ import annotations

import http.server
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from kubernetes import client

from foundry.dev import node_config as cfg
from foundry.dev import node_host as host
from foundry.dev import node_store
from foundry.dev.node import NodeCluster, node_bin_dir
from foundry.dev.node_images import PAUSE_IMAGE
from tests.support.node_pods import pod, shell_container, unique, wait_default_service_account, wait_job, wait_pod

pytestmark = [pytest.mark.node, pytest.mark.slow]


@pytest.fixture
def core(real_node):
    with real_node.api_client() as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def batch(real_node):
    with real_node.api_client() as api:
        yield client.BatchV1Api(api)


def test_node_is_ready_with_its_internal_ip(real_node, core):
    node = core.read_node(real_node.node_name)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == real_node.internal_ip
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version == "v1.35.4"


def test_a_pod_on_a_local_image_runs_and_its_logs_are_readable(core, node_namespace):
    token = uuid.uuid4().hex
    name = unique("hello")
    core.create_namespaced_pod(node_namespace, pod(name, shell_container(f"echo hello-{token}; cat /etc/hostname")))
    wait_pod(core, node_namespace, name, ("Succeeded",))
    logs = core.read_namespaced_pod_log(name, node_namespace)  # apiserver -> kubelet (TLS both ways)
    assert f"hello-{token}" in logs and name in logs


def test_the_pause_image_runs_as_a_container_that_sleeps(core, node_namespace):
    name = unique("pause")
    c = shell_container("", image=PAUSE_IMAGE)
    c.command = None  # the image's own entrypoint, /pause
    core.create_namespaced_pod(node_namespace, pod(name, c))
    p = wait_pod(core, node_namespace, name, ("Running",))
    assert p.status.container_statuses[0].state.running is not None


def _job(name: str, script: str) -> client.V1Job:
    template = pod(name, shell_container(script))
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=template.spec)),
    )


def test_a_job_completes_through_the_job_controller(batch, node_namespace):
    name = unique("ok")
    started = time.monotonic()
    batch.create_namespaced_job(node_namespace, _job(name, "echo done"))
    job = wait_job(batch, node_namespace, name, "Complete")
    print(f"job complete in {time.monotonic() - started:.1f}s")
    assert job.status.succeeded == 1 and not job.status.failed


def test_a_failing_job_fails_with_backoff_limit_exceeded(batch, node_namespace):
    name = unique("bad")
    batch.create_namespaced_job(node_namespace, _job(name, "exit 3"))
    job = wait_job(batch, node_namespace, name, "Failed")
    assert job.status.failed == 1
    assert [c.reason for c in job.status.conditions if c.type == "Failed"] == ["BackoffLimitExceeded"]


def test_a_pod_over_its_memory_limit_is_oom_killed(core, node_namespace):
    name = unique("oom")
    # dd (the container's main process, by exec) reads 256 MiB of zeroes into
    # one buffer: the pages are touched, the 32 MiB limit is hit, the kernel kills it.
    core.create_namespaced_pod(node_namespace, pod(name, shell_container("exec dd if=/dev/zero of=/dev/null bs=256M count=1", memory="32Mi")))
    p = wait_pod(core, node_namespace, name, ("Failed",), timeout=60)
    term = p.status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("OOMKilled", 137)


def _http_server_pod(core, namespace: str, token: str) -> str:
    name = unique("web")
    script = f"mkdir -p /tmp/www && echo {token} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
    core.create_namespaced_pod(namespace, pod(name, shell_container(script, port=8080), labels={"app": name}))
    wait_pod(core, namespace, name, ("Running",))
    return name


def _service(core, namespace: str, app: str) -> client.V1Service:
    svc = client.V1Service(
        metadata=client.V1ObjectMeta(name=app),
        spec=client.V1ServiceSpec(selector={"app": app}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
    )
    return core.create_namespaced_service(namespace, svc)


def _run_and_log(core, namespace: str, script: str, timeout: float = 60) -> str:
    name = unique("client")
    core.create_namespaced_pod(namespace, pod(name, shell_container(script)))
    wait_pod(core, namespace, name, ("Succeeded", "Failed"), timeout=timeout)
    return core.read_namespaced_pod_log(name, namespace)


def test_a_service_cluster_ip_reaches_its_pod_through_kube_proxy(real_node, core, node_namespace):
    token = uuid.uuid4().hex
    app = _http_server_pod(core, node_namespace, token)
    svc = _service(core, node_namespace, app)
    ip = svc.spec.cluster_ip
    # Retry while kube-proxy writes the rules for the new Service.
    logs = _run_and_log(core, node_namespace, f"for i in $(seq 50); do timeout 5 wget -q -O- http://{ip}/ && exit 0; sleep 0.2; done; exit 1")
    assert token in logs
    # The host reaches ClusterIPs too (routed into the node's namespace).
    with urllib.request.urlopen(f"http://{ip}/", timeout=5) as resp:
        assert resp.read().decode().strip() == token


def test_pods_resolve_services_by_name_through_cluster_dns(core, node_namespace):
    token = uuid.uuid4().hex
    app = _http_server_pod(core, node_namespace, token)
    _service(core, node_namespace, app)
    fqdn = f"{app}.{node_namespace}.svc.cluster.local"
    script = f"for i in $(seq 50); do timeout 5 wget -q -O- http://{app}/ && timeout 5 wget -q -O- http://{fqdn}/ && exit 0; sleep 0.2; done; exit 1"
    logs = _run_and_log(core, node_namespace, script)
    assert logs.split() == [token, token]
    # Names outside the cluster do not resolve: nothing is forwarded off the machine.
    out = _run_and_log(core, node_namespace, "nslookup example.com >/dev/null 2>&1 && echo resolved || echo unresolved")
    assert out.strip() == "unresolved"


def test_a_pod_reaches_a_server_on_the_host_at_node_ip(real_node, core, node_namespace):
    token = uuid.uuid4().hex

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = json.dumps({"token": token, "peer": self.client_address[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        logs = _run_and_log(core, node_namespace, f"timeout 5 wget -q -O- http://{real_node.node_ip}:{port}/")
        reply = json.loads(logs)
        assert reply["token"] == token
        assert real_node.addr.owns_ip(reply["peer"])  # the pod's own address, not NATed
    finally:
        server.shutdown()
        server.server_close()


def test_in_cluster_clients_reach_the_api_server_through_the_kubernetes_service(real_node, core, node_namespace):
    name = unique("incluster")
    spec = pod(name, shell_container(
        "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; "
        "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT; "
        "nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo connected"))
    spec.spec.automount_service_account_token = True
    core.create_namespaced_pod(node_namespace, spec)
    wait_pod(core, node_namespace, name, ("Succeeded",))
    ns_line, hostport, connected = core.read_namespaced_pod_log(name, node_namespace).split()
    assert (ns_line, hostport, connected) == (node_namespace, f"{real_node.addr.kubernetes_service_ip}:443", "connected")
    # The serving certificate names the Service IP, so TLS clients in pods verify it.
    ctx = ssl.create_default_context(cafile=str(real_node.ca_file))
    req = urllib.request.Request(f"https://{real_node.addr.kubernetes_service_ip}/version",
                                 headers={"Authorization": f"Bearer {real_node.admin_token}"})
    with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
        assert json.loads(resp.read())["gitVersion"] == "v1.35.4"


def test_pod_security_restricted_refuses_a_noncompliant_pod_and_runs_a_compliant_one(core):
    ns = unique("restricted")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})))
    try:
        wait_default_service_account(core, ns)
        loose = pod(unique("loose"), shell_container("echo hi", security=None))
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(ns, loose)
        assert refused.value.status == 403
        assert 'violates PodSecurity "restricted:latest"' in json.loads(refused.value.body)["message"]
        name = unique("strict")
        core.create_namespaced_pod(ns, pod(name, shell_container("id -u")))
        wait_pod(core, ns, name, ("Succeeded",))
        assert core.read_namespaced_pod_log(name, ns).strip() == "65532"
    finally:
        core.delete_namespace(ns)


# ---- teardown ------------------------------------------------------------------
def _leftovers(cluster: NodeCluster, pod_netns: list[str]) -> dict[str, object]:
    a, state = cluster.addr, cluster.paths.root
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    iptables = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    # The image store outlives the cluster (node_store.py); nothing but images may.
    store = cluster.paths.containerd_root
    store_mounts = host.mounts_under(store)
    if cluster.containerd_address.is_socket():
        containers = subprocess.run(["ctr", "--address", str(cluster.containerd_address), "-n", "k8s.io", "containers", "ls", "-q"],
                                    capture_output=True, text=True, check=True).stdout.split()
    elif cluster.paths.image_store is not None:
        with tempfile.TemporaryDirectory(prefix="fstore-") as work:  # a short path: it holds a socket
            containers = node_store.stored_containers(store, Path(work))
    else:
        containers = [store] if store.exists() else []
    return {
        "processes in cgroup": sorted(host.cgroup_pids(a)),
        "processes naming its dirs": host.processes_mentioning(str(state) + "/") + host.processes_mentioning(str(cluster.paths.short) + "/"),
        "cgroups": host.cgroups_left(a),
        "node netns": host.netns_exists(a.netns),
        "pod netns": [n for n in pod_netns if host.netns_exists(n)],
        "links": [name for name in (a.host_veth, a.node_veth, a.bridge) if f" {name}:" in links or f" {name}@" in links],
        "host routes": cfg.overlapping(a, host.host_routes()),
        "iptables rules": [line for line in iptables.splitlines() if str(a.pods) in line or str(a.services) in line],
        "mounts": host.mounts_under(state) + host.mounts_under(cluster.paths.short) + store_mounts,
        "ipam dir": cluster.paths.ipam_dir.exists(),
        "containers in containerd": containers,
        "short dir (sockets, kubelet root)": cluster.paths.short.exists(),
    }


def _run_a_pod_and_a_service(cluster: NodeCluster) -> list[str]:
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        ns = "leftovers"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        wait_default_service_account(core, ns)
        app = _http_server_pod(core, ns, "x")
        _service(core, ns, app)
        # kube-proxy has written rules for the Service once the host reaches it.
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{core.read_namespaced_service(app, ns).spec.cluster_ip}/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    kube_chains = host.run(["iptables-save", "-t", "nat"], netns=cluster.addr.netns).stdout
    assert "KUBE-SERVICES" in kube_chains and str(cluster.addr.pods) in kube_chains
    pod_netns = host.pod_netns_of(cluster.addr)
    assert pod_netns, "the running pod has a cni-* network namespace"
    return pod_netns


def test_a_crashed_owners_survivors_are_removed_by_the_next_start_whose_teardown_leaves_nothing(real_node, tmp_path):
    """A second cluster beside the session's (its own slot, netns and bridge):
    its owner is SIGKILLed mid-run; the next start in that slot removes what
    survived and runs pods; its stop() leaves nothing, checked one by one."""
    bin_dir = node_bin_dir(build=False)
    script = f"""
import time
from pathlib import Path
from kubernetes import client
from foundry.dev import node_host as host
from foundry.dev.node import NodeCluster
from tests.support.node_pods import pod, shell_container, wait_default_service_account, wait_pod
c = NodeCluster(bin_dir=Path({str(bin_dir)!r}), state_root=Path({str(tmp_path / "crashed")!r})).start()
core = client.CoreV1Api(c.api_client())
wait_default_service_account(core, "default")
core.create_namespaced_pod("default", pod("sleeper", shell_container("exec sleep 3600")))
wait_pod(core, "default", "sleeper", ("Running",))
print(c.slot, ",".join(host.pod_netns_of(c.addr)), c.paths.root, flush=True)
time.sleep(3600)
"""
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        slot_s, netns_s, state_s = owner.stdout.readline().split()
    finally:
        owner.kill()  # SIGKILL: no stop(), no cleanup of any kind
        owner.wait()
    slot, pod_netns = int(slot_s), netns_s.split(",")
    assert slot != real_node.slot
    addr = cfg.NodeAddressing.for_slot(slot)
    # The components die with their owner (SIGTERM on parent death), but the
    # shim and the container are not its children: they, the pod's netns and
    # the kubelet's mounts survive.
    deadline = time.monotonic() + 20
    while host.processes_in_netns(addr.netns) and time.monotonic() < deadline:
        if all(p in host.cgroup_pids(addr) for p in host.processes_in_netns(addr.netns)):
            break
        time.sleep(0.2)
    assert host.cgroup_pids(addr) and host.netns_exists(addr.netns) and all(host.netns_exists(n) for n in pod_netns)
    assert host.mounts_under(Path(state_s))

    again = NodeCluster(bin_dir=bin_dir, state_root=tmp_path / "again", slot=slot).start()
    try:
        assert not host.mounts_under(Path(state_s)), "the crashed run's mounts are gone"
        assert not any(host.netns_exists(n) for n in pod_netns), "the crashed run's pod netns are gone"
        with again.api_client() as api:
            assert [p.metadata.name for p in client.CoreV1Api(api).list_pod_for_all_namespaces().items] == []
        # The slot's image store kept its images but none of the crashed run's containers.
        ctr = ["ctr", "--address", str(again.containerd_address), "-n", "k8s.io"]
        assert subprocess.run([*ctr, "containers", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split() == []
        assert PAUSE_IMAGE in subprocess.run([*ctr, "images", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split()
        pod_netns = _run_a_pod_and_a_service(again)
        # While it runs, every probe below sees something (so none is vacuous),
        # except iptables on the host: the node's rules live in its namespace.
        running = _leftovers(again, pod_netns)
        assert [k for k, v in running.items() if not v] == ["iptables rules"], running
    finally:
        again.stop()
    left = _leftovers(again, pod_netns)
    assert all(not v for v in left.values()), left
    print(f"second start: node ready {again.timings['node_ready_s']}s, teardown {again.timings['teardown_s']}s")
    # The session's cluster was untouched by the other's crash and teardown.
    with real_node.api_client() as api:
        node = client.CoreV1Api(api).read_node(real_node.node_name)
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"


def test_without_root_it_refuses_and_says_why(tmp_path):
    cluster = NodeCluster(bin_dir=node_bin_dir(build=False), state_root=tmp_path)
    os.seteuid(65534)  # only the effective uid: the saved uid (root) brings it back
    try:
        with pytest.raises(host.NodeHostError, match="needs root"):
            cluster.start()
    finally:
        os.seteuid(0)
    assert cluster.slot is None and not list(tmp_path.iterdir())  # nothing was claimed or made


def test_foundry_dev_cluster_node_prints_a_kubeconfig_that_works_and_ctrl_c_cleans_up(tmp_path):
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "foundry.cli.main", "dev", "cluster", "--node"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()  # printed once the node is Ready
        assert line.startswith("export KUBECONFIG="), (line, proc.stderr.read() if proc.poll() is not None else "")
        kubeconfig = line.split("=", 1)[1]
        kubectl = node_bin_dir(build=False) / "kubectl"
        out = subprocess.run([str(kubectl), "--kubeconfig", kubeconfig, "get", "nodes", "-o",
                              "jsonpath={.items[0].status.conditions[?(@.type=='Ready')].status}"],
                             capture_output=True, text=True, timeout=30)
        assert out.stdout == "True", out.stderr
        slot = int(Path(kubeconfig).parent.name.removeprefix("slot-"))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, proc.stderr.read()
    addr = cfg.NodeAddressing.for_slot(slot)
    assert not host.netns_exists(addr.netns) and not host.cgroups_left(addr)
    assert not host.mounts_under(tmp_path) and not host.processes_mentioning(str(tmp_path) + "/")
