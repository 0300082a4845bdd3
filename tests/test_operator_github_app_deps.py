"""The operator as configured with a GitHub App and no static token: it reads GitHub with
its own installation token and gives each attempt a token for the one repository."""

from __future__ import annotations

import pytest
import yaml

from foundry.dev.github_auth import generate_app_key
from foundry.dev.github_server import GitHubServer

pytestmark = pytest.mark.kube


def test_build_deps_reads_github_as_the_app_and_scopes_attempt_tokens(control_plane, tmp_path, monkeypatch):
    from foundry.operator.deps import build_deps

    private, public = generate_app_key()
    key_file = tmp_path / "app.pem"
    key_file.write_text(private)
    cfg = {"repositories": [{"name": "api", "github": "acme/api"}],
           "github": {"app_id": 4242, "installation_id": 77, "private_key_file": str(key_file)}}
    (tmp_path / "foundry.yaml").write_text(yaml.safe_dump(cfg))
    with GitHubServer() as gh:
        gh.install_app(app_id=4242, public_key_pem=public, installation_id=77)
        gh.add_repo("acme/api", files={"README.md": "hi\n"})
        gh.add_repo("acme/other", files={"README.md": "no\n"})
        gh.commit("acme/api", "foundry/x", {"app.py": "print(1)\n"})
        number = gh.open_pr("acme/api", "foundry/x", "x")
        for name in ("FOUNDRY_GITHUB_TOKEN", "FOUNDRY_LINEAR_API_KEY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("FOUNDRY_CONFIG", str(tmp_path / "foundry.yaml"))
        monkeypatch.setenv("FOUNDRY_DATABASE_URL", f"sqlite:///{tmp_path / 'f.db'}")
        monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
        monkeypatch.setenv("FOUNDRY_GITHUB_URL", gh.url)
        deps = build_deps()

        # The operator's reads work without any static token: the App's installation token.
        assert deps.github.get_pull("acme/api", number)["number"] == number
        # Who Foundry is on GitHub (a PR is adopted only if opened as this): the App's bot user.
        assert deps.github.login() == "foundry[bot]"
        # Each attempt's push token is limited to its repository, with only what the runner needs.
        pushed = deps.agents.tokens.push_token("acme/api")
        info = gh.token_info(pushed.token)
        assert info is not None and pushed.expires_at is not None
        assert sorted(info.repositories or []) == ["acme/api"]
        # (GitHub adds metadata: read to every installation token.)
        assert {k: v for k, v in info.permissions.items() if k != "metadata"} == {
            "contents": "write", "pull_requests": "write"}
        deps.engine.dispose()
