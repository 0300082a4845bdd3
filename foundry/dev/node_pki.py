"""Certificates for a real single-node cluster: one CA, the API server's and
kubelet's serving certificates, a client certificate per component, and the
ServiceAccount signing key. ECDSA P-256 keys: a fresh set takes milliseconds,
so every start gets new ones and nothing stale can be trusted."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from foundry.dev.node_config import CLUSTER_DOMAIN, NodeAddressing

# role -> (common name, organisations); the names the default RBAC bootstrap policy binds.
CLIENTS = {
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "kube-proxy": ("system:kube-proxy", ()),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
    # CoreDNS reads Services and EndpointSlices; system:masters keeps its RBAC out of the test bed.
    "coredns": ("foundry:coredns", ("system:masters",)),
}


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class _CA:
    def __init__(self) -> None:
        self.key = _key()
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foundry-node-ca")])
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, cn: str, orgs: tuple[str, ...] = (), *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), server: bool = False):
        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        now = dt.datetime.now(dt.timezone.utc)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if dns or ips:
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(self.key, hashes.SHA256()), key


def write_node_pki(directory: Path, addr: NodeAddressing) -> dict[str, Path]:
    """Write every key and certificate the cluster needs; returns paths by role
    (``ca``, ``ca_key``, ``sa_key``, ``sa_pub``, ``<role>_cert``/``<role>_key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _CA()
    out: dict[str, Path] = {"ca": directory / "ca.crt", "ca_key": directory / "ca.key"}
    _write_cert(out["ca"], ca.cert)
    _write_key(out["ca_key"], ca.key)

    def save(role: str, pair) -> None:
        cert, key = pair
        out[f"{role}_cert"] = directory / f"{role}.crt"
        out[f"{role}_key"] = directory / f"{role}.key"
        _write_cert(out[f"{role}_cert"], cert)
        _write_key(out[f"{role}_key"], key)

    svc_names = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{CLUSTER_DOMAIN}", "localhost")
    save("apiserver", ca.issue("kube-apiserver", dns=svc_names, ips=("127.0.0.1", addr.internal_ip, addr.kubernetes_service_ip), server=True))
    save("kubelet_serving", ca.issue(addr.node_name, dns=(addr.node_name,), ips=(addr.internal_ip,), server=True))
    save("kubelet", ca.issue(f"system:node:{addr.node_name}", ("system:nodes",)))
    for role, (cn, orgs) in CLIENTS.items():
        save(role.replace("-", "_"), ca.issue(cn, orgs))
    sa = _key()
    out["sa_key"], out["sa_pub"] = directory / "sa.key", directory / "sa.pub"
    _write_key(out["sa_key"], sa)
    out["sa_pub"].write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return out
