"""Bridge settings from the environment: the lean-path switch and its clear errors."""

from __future__ import annotations

import pytest

from foundry.bridge.settings import SettingsError, settings_from_env

BASE = {"FOUNDRY_LINEAR_WEBHOOK_SECRET": "s"}


@pytest.mark.parametrize(("raw", "expected"), [(None, True), ("", True), ("0", False), ("off", False), ("TRUE", True)])
def test_lean_path_switch(raw: str | None, expected: bool) -> None:
    env = dict(BASE) if raw is None else {**BASE, "FOUNDRY_BRIDGE_LEAN": raw}
    assert settings_from_env(env).lean is expected


def test_lean_path_switch_refuses_nonsense() -> None:
    with pytest.raises(SettingsError, match="FOUNDRY_BRIDGE_LEAN must be true or false, got 'maybe'"):
        settings_from_env({**BASE, "FOUNDRY_BRIDGE_LEAN": "maybe"})
