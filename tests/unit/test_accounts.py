"""shared/security/accounts.py without a server: the layout covers every service, passwords are kept
private and reused (the over-the-wire proofs are in tests/security/test_accounts.py)."""

from __future__ import annotations

import json
from pathlib import Path

from esdb_gater.services import SERVICES
from esdb_gater.shared.security import accounts


def test_every_service_has_exactly_one_user_with_a_permission_entry() -> None:
    assert set(accounts.SERVICE_PERMISSIONS) == set(SERVICES)
    users = accounts.users()
    assert len(users) == len(set(users))
    assert len({accounts.password_env(u) for u in users}) == len(users)


def test_the_layout_follows_the_subject_prefix_and_never_holds_a_password() -> None:
    text = accounts.render("acme")
    assert '"acme.api.demo.>"' in text and '"acme.log.>"' in text
    assert "esdb." not in text.split("accounts {", 1)[1]
    for user in accounts.users():
        ref = f"password: ${accounts.password_env(user)}"
        assert ref + "\n" in text or ref + "}" in text
    # each service subscribes to its own inboxes only, and answers through allow_responses
    for name in SERVICES:
        assert f'"_INBOX.{name}.>"' in text
    assert '"_INBOX.>"' not in text and '"_R_.>"' not in text


def test_secure_settings_keep_targets_in_each_tenants_delivery_space() -> None:
    s = accounts.secure_settings()
    allow = s["security"]["target_allow"]  # type: ignore[index]
    assert allow["demo"] == ["deliver.demo."] and allow["billing"] == ["deliver.billing."]
    assert allow["_"] == ["deliver.demo."]  # only tenants with the channel API get forwardings
    no_channels = accounts.secure_settings((accounts.Tenant("ORDERS", "orders", ("orders",)),))
    assert no_channels["security"]["target_allow"]["_"] == []  # type: ignore[index]
    assert "channels" not in no_channels


def test_passwords_are_created_private_reused_and_completed(tmp_path: Path) -> None:
    first = accounts.load_or_create_passwords(tmp_path)
    path = tmp_path / accounts.PASSWORDS_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert set(first) == set(accounts.users())
    assert all(pw[0].isalpha() and len(pw) >= 32 for pw in first.values())
    assert accounts.load_or_create_passwords(tmp_path) == first
    stored = json.loads(path.read_text())
    del stored["demo"]
    path.write_text(json.dumps(stored))
    again = accounts.load_or_create_passwords(tmp_path)
    assert again["demo"] != first["demo"] and again["orders"] == first["orders"]
    assert path.stat().st_mode & 0o777 == 0o600
