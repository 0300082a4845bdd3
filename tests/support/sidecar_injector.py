"""A mutating admission webhook that injects a privileged init container into pods, as mesh
sidecar injectors do: the way a pod Foundry builds compliant with `restricted` ends up refused
by the PodSecurity admission in a real cluster.

Foundry's agent manifest has no knob that weakens its security context (on purpose), so the
refusal a user can actually meet comes from something else in the cluster mutating the pod
before the validating admissions run. This webhook is that something: HTTPS on a host address
the API server reaches (the node IP), a self-signed certificate for that address as its own CA
bundle, and a MutatingWebhookConfiguration scoped to one namespace.

    with SidecarInjector(api, host=cluster.node_ip, namespace="agents-1") as injector:
        ...  # pods created in agents-1 now carry the `mesh-init` init container
        injector.reviews  # how many pods the API server sent
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client

from foundry.dev.node_images import BUSYBOX_IMAGE

INIT_NAME = "mesh-init"
# What an iptables-rewriting mesh init container asks for; `restricted` forbids each part.
INJECTED = {"name": INIT_NAME, "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never", "command": ["true"],
            "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}


def self_signed(host: str, directory: Path) -> tuple[Path, Path, bytes]:
    """(cert file, key file, cert PEM) for `host`, the cert its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sidecar-injector {host}")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file, pem


def review_response(review: dict[str, Any]) -> dict[str, Any]:
    """The AdmissionReview answer: allow, with a JSONPatch appending the init container."""
    pod = (review.get("request") or {}).get("object") or {}
    has_init = bool((pod.get("spec") or {}).get("initContainers"))
    patch = ([{"op": "add", "path": "/spec/initContainers/-", "value": INJECTED}] if has_init
             else [{"op": "add", "path": "/spec/initContainers", "value": [INJECTED]}])
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": (review.get("request") or {}).get("uid"), "allowed": True, "patchType": "JSONPatch",
                         "patch": base64.b64encode(json.dumps(patch).encode()).decode()}}


class SidecarInjector:
    def __init__(self, api: client.ApiClient, *, host: str, namespace: str) -> None:
        self.api = api
        self.host = host
        self.namespace = namespace
        self.name = f"foundry-test-injector-{uuid.uuid4().hex[:6]}"
        self.reviews = 0
        self._dir = tempfile.TemporaryDirectory(prefix="injector-")
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "SidecarInjector":
        cert, key, pem = self_signed(self.host, Path(self._dir.name))
        injector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                injector.reviews += 1
                out = json.dumps(review_response(json.loads(body))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, name="sidecar-injector", daemon=True).start()
        port = self._server.server_address[1]
        client.AdmissionregistrationV1Api(self.api).create_mutating_webhook_configuration({
            "metadata": {"name": self.name},
            "webhooks": [{
                "name": "inject.sidecar.foundry.test",
                "clientConfig": {"url": f"https://{self.host}:{port}/mutate", "caBundle": base64.b64encode(pem).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
                "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5, "reinvocationPolicy": "Never"}],
        })
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            client.AdmissionregistrationV1Api(self.api).delete_mutating_webhook_configuration(self.name)
        except client.ApiException as err:
            if err.status != 404:
                raise
        finally:
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
            self._dir.cleanup()
