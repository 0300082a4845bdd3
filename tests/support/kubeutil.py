"""Small helpers for tests and the dev stack that act as other Kubernetes identities."""

from __future__ import annotations

from kubernetes import client


def ensure_service_account(api: client.ApiClient, namespace: str, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def service_account_token(api: client.ApiClient, namespace: str, name: str, seconds: int = 3600) -> str:
    """Issue a bound token for a ServiceAccount through the TokenRequest API."""
    core = client.CoreV1Api(api)
    req = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))
    return core.create_namespaced_service_account_token(name, namespace, req).status.token


def client_with_token(admin: client.ApiClient, token: str) -> client.ApiClient:
    """An ApiClient for the same server as `admin`, authenticated by `token`."""
    cfg = client.Configuration()
    src = admin.configuration
    cfg.host = src.host
    cfg.ssl_ca_cert = src.ssl_ca_cert
    cfg.verify_ssl = src.verify_ssl
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)
