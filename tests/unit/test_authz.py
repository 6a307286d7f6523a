"""The authorization table (shared/security/authz.py): it covers every op of every service and nothing
else, docs/security.md shows exactly it, the verification cache, and the mode rules."""

from __future__ import annotations

import importlib
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from esdb_gater.services import SERVICES
from esdb_gater.shared.core.settings import SecuritySettings
from esdb_gater.shared.models.channel import UnsubscribeRequest
from esdb_gater.shared.models.stream import AppendMultiRequest, AppendRequest, ListRequest, ReadAllRequest
from esdb_gater.shared.security import authz
from esdb_gater.shared.security import capability as cap
from esdb_gater.shared.security.authz import TABLE, Authz, ServiceCredential, Verifier
from esdb_gater.shared.security.capability import CapabilityError, Identity

ROOT = Path(__file__).resolve().parents[2]
SPEC_TOKEN = re.compile(r"ServiceSpec\([^)]*?token=\"(\w+)\"", re.S)


def _ops() -> dict[str, tuple[str, type[BaseModel]]]:
    """Every op of every service of services/__init__.py SERVICES: "<token>.<op>" -> (service, request model)."""
    found: dict[str, tuple[str, type[BaseModel]]] = {}
    for name, module_name in SERVICES.items():
        module = importlib.import_module(module_name)
        source = Path(module.__file__).read_text()  # type: ignore[arg-type]
        m = SPEC_TOKEN.search(source)
        assert m is not None, f"{module_name}: no ServiceSpec(token=...)"
        token = m.group(1)
        for op in module.OPS:
            found[f"{op.token or token}.{op.name}"] = (name, op.request)
    return found


def test_the_table_covers_every_op_of_every_service_and_nothing_else() -> None:
    ops = _ops()
    assert set(SERVICES) >= {"stream", "snapshot", "subscription", "schema", "link", "scavenger", "causation"}
    assert sorted(set(ops) - set(TABLE)) == [], "ops without a rule"
    assert sorted(set(TABLE) - set(ops)) == [], "rules for ops that do not exist"


def _item_model(model: type[BaseModel], field: str) -> type[BaseModel]:
    """The model of the items of ``field`` (``list[X]`` or ``X | None``)."""
    todo = [model.model_fields[field].annotation]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
        todo.extend(typing.get_args(t))
    raise AssertionError(f"{model.__name__}.{field} holds no model")


def test_each_rule_names_fields_of_its_request_model() -> None:
    for key, (service, model) in _ops().items():
        for rule in (TABLE[key], *TABLE[key].also):
            fields_of = model if rule.each is None else _item_model(model, rule.each)
            for f in rule.fields:
                assert f in fields_of.model_fields, f"{key}: {rule.template} names {f}, not a field of {fields_of}"
            assert rule.template.startswith("esdb://{realm}/"), key
            assert rule.action.count("/") == 1 and rule.action in cap.ACTIONS, key
            if rule.checked_by == "channel":
                assert service == "channel", key


def test_append_multi_needs_every_stream_and_the_checkpoint() -> None:
    req = AppendMultiRequest.model_validate(
        {
            "appends": [
                {"stream_id": "a", "events": [{"event_type": "x"}]},
                {"stream_id": "b", "events": [{"event_type": "x"}]},
            ],
            "checkpoint": {"name": "proc", "position": 3},
        }
    )
    assert TABLE["stream.append_multi"].checks("r", "s", req) == [
        ("esdb://r/stream/s/a", "stream/append"),
        ("esdb://r/stream/s/b", "stream/append"),
        ("esdb://r/checkpoint/s/proc", "stream/append"),
    ]
    a = _authz("required")
    only_a = _token([("esdb://default/stream/s/a", "stream/append"), ("esdb://default/checkpoint/s/*", "*")])
    with pytest.raises(CapabilityError) as exc:
        a.enforce("stream.append_multi", "s", req, _bearer(only_a))
    assert exc.value.reason == "insufficient_permissions" and "stream/s/b" in str(exc.value)
    streams_only = _token([("esdb://default/stream/s/*", "stream/append")])
    with pytest.raises(CapabilityError) as exc:
        a.enforce("stream.append_multi", "s", req, _bearer(streams_only))
    assert "checkpoint/s/proc" in str(exc.value)
    both = _token([("esdb://default/stream/s/*", "stream/append"), ("esdb://default/checkpoint/s/*", "stream/append")])
    a.enforce("stream.append_multi", "s", req, _bearer(both))
    with pytest.raises(CapabilityError) as exc:
        a.enforce("stream.append_multi", "s", req, None)
    assert exc.value.reason == "capability_required"


def test_read_all_needs_read_on_every_stream_not_the_metadata_grant() -> None:
    """read_all returns every stream's events: store/read (stream.list, store.info) or a grant on
    some streams must not be enough."""
    a = _authz("required")
    req = ReadAllRequest.model_validate({})
    for grants in (
        [("esdb://default/store/s", "store/read")],
        [("esdb://default/stream/s/orders-*", "stream/read")],
        [("esdb://default/stream/s/orders-1", "stream/read")],
    ):
        with pytest.raises(CapabilityError):
            a.enforce("stream.read_all", "s", req, _bearer(_token(grants)))
    a.enforce("stream.read_all", "s", req, _bearer(_token([("esdb://default/stream/s/*", "stream/read")])))


def test_docs_security_md_shows_the_table() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    m = re.search(r"<!-- authz-table:start -->\n(.*?)\n<!-- authz-table:end -->", text, re.S)
    assert m is not None, "docs/security.md lacks the authz-table markers"
    regenerate = "python -c 'from esdb_gater.shared.security import authz; print(authz.markdown_table())'"
    assert m.group(1).strip() == authz.markdown_table(), regenerate


def test_resources_from_the_request() -> None:
    req = AppendRequest.model_validate({"stream_id": "acct-1", "events": [{"event_type": "x"}]})
    assert TABLE["stream.append"].resource("prod", "orders", req) == "esdb://prod/stream/orders/acct-1"
    assert TABLE["stream.list"].resource("prod", "orders", ListRequest()) == "esdb://prod/store/orders"
    assert TABLE["channel.publish"].resource("r", "_", {"channel": "alerts", "topic": "a.b"}) == (
        "esdb://r/channel/alerts/a.b"
    )
    assert TABLE["stream.append"].shown() == "esdb://<realm>/stream/<store>/<stream_id>"


# --- the verification cache -------------------------------------------------------------------

ISSUER = Identity.generate()
HOLDER = Identity.generate()


def _token(grants: list[tuple[str, str]], ttl_s: int = 60, now: int | None = None) -> str:
    return cap.encode(cap.sign(cap.create(ISSUER, HOLDER, grants, ttl_s=ttl_s, now=now), ISSUER))


def test_the_cache_verifies_a_token_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = cap.verify

    def counting(*a: object, **kw: object) -> cap.Capability:
        calls.append(1)
        return real(*a, **kw)  # type: ignore[arg-type]  # pass-through

    monkeypatch.setattr(cap, "verify", counting)
    v = Verifier([ISSUER.did], None, 0)
    t = _token([("esdb://default/*", "*")])
    for _ in range(100):
        v.verify(t)
    assert len(calls) == 1 and v.hits == 99 and v.misses == 1


def test_the_cache_forgets_an_expired_token() -> None:
    v = Verifier([ISSUER.did], None, 0)
    now = 1_900_000_000
    t = _token([("esdb://default/*", "*")], ttl_s=10, now=now)
    v.verify(t, now=now + 1)
    assert len(v) == 1
    with pytest.raises(CapabilityError) as exc:
        v.verify(t, now=now + 11)
    assert exc.value.reason == "expired"
    assert len(v) == 0


def test_the_cache_is_bounded_and_keeps_no_failures() -> None:
    v = Verifier([ISSUER.did], None, 0, max_entries=3)
    tokens = [_token([(f"esdb://default/stream/s/{i}", "*")]) for i in range(5)]
    for t in tokens:
        v.verify(t)
    assert len(v) == 3
    stranger = Identity.generate()
    bad = cap.encode(cap.sign(cap.create(stranger, HOLDER, [("esdb://default/*", "*")]), stranger))
    for _ in range(2):
        with pytest.raises(CapabilityError):
            v.verify(bad)
    assert bad not in v._cache and v.misses == 7


# --- the mode rules (no network) ----------------------------------------------------------------


def _authz(mode: str) -> Authz:
    settings = SecuritySettings.model_validate({"capability_mode": mode, "trusted_issuers": [ISSUER.did]})
    return Authz(settings, ServiceCredential(Identity.generate(), settings.realm))


def _append() -> AppendRequest:
    return AppendRequest.model_validate({"stream_id": "acct-1", "events": [{"event_type": "x"}]})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_required_mode() -> None:
    a = _authz("required")
    with pytest.raises(CapabilityError) as exc:
        a.enforce("stream.append", "orders", _append(), None)
    assert exc.value.reason == "capability_required"
    other = _token([("esdb://default/stream/orders/acct-2", "stream/append")])
    with pytest.raises(CapabilityError) as exc:
        a.enforce("stream.append", "orders", _append(), _bearer(other))
    assert exc.value.reason == "insufficient_permissions"
    right = _token([("esdb://default/stream/orders/acct-*", "stream/append")])
    ra = a.enforce("stream.append", "orders", _append(), _bearer(right))
    assert ra.capability is not None and not ra.service
    with pytest.raises(CapabilityError) as exc:
        a.enforce("stream.append", "orders", _append(), {"Authorization": "Basic eDp5"})
    assert exc.value.reason == "parse_error"
    # health and memory stay open
    a.enforce("health.quick", "orders", ListRequest(), None)
    a.enforce("memory.level", "orders", ListRequest(), None)


def test_optional_and_disabled_modes() -> None:
    bad = _token([("esdb://default/stream/orders/other", "stream/append")])
    a = _authz("optional")
    a.enforce("stream.append", "orders", _append(), None)
    with pytest.raises(CapabilityError):
        a.enforce("stream.append", "orders", _append(), _bearer(bad))
    d = _authz("disabled")
    d.enforce("stream.append", "orders", _append(), _bearer(bad))
    d.enforce("stream.append", "orders", _append(), {"Authorization": "garbage"})


def test_the_service_credential_in_every_mode() -> None:
    for mode in ("disabled", "optional", "required"):
        a = _authz(mode)
        assert a.credential is not None
        ra = a.enforce("stream.append", "orders", _append(), a.credential.headers(), internal=True)
        assert ra.service and authz.is_service_call()
        # a client's token is not the service credential, even one granting everything
        everything = _token([("esdb://default/*", "*")])
        with pytest.raises(CapabilityError) as exc:
            a.enforce("stream.append", "orders", _append(), _bearer(everything), internal=True)
        assert exc.value.reason == "insufficient_permissions"
        assert not authz.is_service_call()
        # a self-made root token of another key is not trusted
        rogue = Identity.generate()
        forged = cap.encode(cap.sign(cap.create(rogue, rogue, [("esdb://default/*", "*")]), rogue))
        with pytest.raises(CapabilityError):
            a.enforce("stream.append", "orders", _append(), _bearer(forged), internal=True)


def test_the_service_token_is_renewed_before_it_expires() -> None:
    c = ServiceCredential(Identity.generate(), "default")
    t0 = c.token(now=1_900_000_000)
    assert c.token(now=1_900_000_000 + 60) == t0
    t1 = c.token(now=1_900_000_000 + authz.SERVICE_TTL_S - authz.SERVICE_RENEW_S + 1)
    assert t1 != t0
    decoded = cap.decode(t1)
    assert decoded.iss == decoded.aud == c.did and decoded.att == (cap.Grant("esdb://default/*", "*"),)


def test_channel_rules_are_left_to_the_channel_policy() -> None:
    a = _authz("required")
    # unsubscribe: the channel policy decides (the creator needs no grant)
    a.enforce("channel.unsubscribe", "_", UnsubscribeRequest(id="0" * 32), None)
    assert authz.request_token() is None
    t = _token([("esdb://default/channel/events/*", "channel/subscribe")])
    a.enforce("channel.unsubscribe", "_", UnsubscribeRequest(id="0" * 32), _bearer(t))
    assert authz.request_token() == t


def test_holder_did() -> None:
    c = cap.decode(_token([("x", "y")]))
    assert authz.holder_did(c) == HOLDER.did
    assert authz.holder_did(c, audience=HOLDER.did) == ISSUER.did


def test_the_service_credential_with_an_audience() -> None:
    """With ``security.audience`` set, tokens must be addressed to it: the services' too."""
    service_did = Identity.generate().did
    settings = SecuritySettings.model_validate(
        {"capability_mode": "required", "trusted_issuers": [ISSUER.did], "audience": service_did}
    )
    a = Authz(settings, ServiceCredential(Identity.generate(), settings.realm, audience=service_did))
    assert a.credential is not None
    assert a.enforce("stream.append", "orders", _append(), a.credential.headers(), internal=True).service
    bearer = _token([("esdb://default/*", "*")])  # addressed to HOLDER, not the service
    with pytest.raises(CapabilityError) as exc:
        a.enforce("stream.append", "orders", _append(), _bearer(bearer))
    assert exc.value.reason == "audience_mismatch"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from esdb_gater.shared.core.settings import Settings

    monkeypatch.setenv("ESDB_GATER_SECURITY__CAPABILITY_MODE", "required")
    monkeypatch.setenv("ESDB_GATER_SECURITY__TRUSTED_ISSUERS", f'["{ISSUER.did}"]')
    monkeypatch.setenv("ESDB_GATER_SECURITY__REALM", "prod")
    sec = Settings().security
    assert (sec.capability_mode, sec.trusted_issuers, sec.realm) == ("required", [ISSUER.did], "prod")


def test_load_key_reads_raw_hex_and_base64(tmp_path: Path) -> None:
    import base64

    seed = bytes(range(32))
    for name, data in (("raw", seed), ("hex", seed.hex().encode() + b"\n"), ("b64", base64.b64encode(seed))):
        (tmp_path / name).write_bytes(data)
        assert authz.load_key(tmp_path / name) == seed
    (tmp_path / "short").write_bytes(b"abcd")
    with pytest.raises(ValueError):
        authz.load_key(tmp_path / "short")
