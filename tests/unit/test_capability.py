"""Capability tokens: base58 and did:key, the JWT form, verification with every reason,
authorization with wildcards, and delegation chains (subset, expiry clamping, proofs)."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from esdb_gater.shared.core.errors import UnauthorizedError
from esdb_gater.shared.security import capability as cap
from esdb_gater.shared.security.capability import CapabilityError, Identity

NOW = 1_800_000_000
RES = "esdb://default/channel/events/user.created"


def _reason(exc: pytest.ExceptionInfo[CapabilityError]) -> str:
    assert isinstance(exc.value, UnauthorizedError) and exc.value.code == "unauthorized"
    assert exc.value.details["reason"] == exc.value.reason
    return exc.value.reason


# --- base58 and did:key ------------------------------------------------------------------------------


def test_base58_bitcoin_alphabet_and_leading_zeros() -> None:
    assert cap.b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert cap.b58encode(b"\x00\x00\x01") == "112"
    assert cap.b58encode(b"") == ""
    for data in (b"", b"\x00", b"\x00\x00\xff", bytes(range(40))):
        assert cap.b58decode(cap.b58encode(data)) == data
    with pytest.raises(ValueError, match="base58"):
        cap.b58decode("0OIl")


def test_did_key_of_a_known_ed25519_key() -> None:
    # RFC 8032 test 1 key pair
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    ident = Identity.from_private_key(seed)
    assert ident.public_key == public
    assert ident.did.startswith("did:key:z6Mk") and 40 < len(ident.did) < 70
    assert cap.b58decode(ident.did[len("did:key:z") :])[:2] == b"\xed\x01"
    assert cap.public_key_from_did(ident.did) == public
    assert cap.did_from_public_key(public) == ident.did


def test_generated_identities_and_bad_dids() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a.did != b.did and cap.is_valid_did(a.did)
    assert Identity.from_did(a.did).private_key is None
    for bad in (
        "did:web:example.com",
        "did:key:x123",
        "did:key:z0OIl",
        "",
        "did:key:z" + cap.b58encode(b"\x12\x00" + bytes(32)),
    ):
        assert not cap.is_valid_did(bad), bad
    short = "did:key:z" + cap.b58encode(b"\xed\x01" + bytes(31))
    with pytest.raises(ValueError, match="32 bytes"):
        cap.public_key_from_did(short)


# --- tokens --------------------------------------------------------------------------------------


@pytest.fixture
def root() -> Identity:
    return Identity.generate()


@pytest.fixture
def alice() -> Identity:
    return Identity.generate()


def _token(issuer: Identity, audience: Identity, grants: list[tuple[str, str]], **kw: Any) -> str:
    return cap.encode(cap.sign(cap.create(issuer, audience, grants, now=kw.pop("now", NOW), **kw), issuer))


def test_a_token_is_a_standard_eddsa_jwt(root: Identity, alice: Identity) -> None:
    token = _token(root, alice, [(RES, "channel/publish")], ttl_s=60)
    head, body, sig = token.split(".")

    def pad(s: str) -> str:
        return s + "=" * (-len(s) % 4)

    header = json.loads(base64.urlsafe_b64decode(pad(head)))
    payload = json.loads(base64.urlsafe_b64decode(pad(body)))
    assert header["alg"] == "EdDSA" and header["typ"] == "JWT"
    assert payload["iss"] == root.did and payload["aud"] == alice.did
    assert payload["exp"] == NOW + 60 and payload["nbf"] == NOW and payload["iat"] == NOW
    assert payload["att"] == [{"with": RES, "can": "channel/publish"}] and payload["prf"] == []
    assert "=" not in token
    # any JWT library can check it: Ed25519 over "header.payload"
    Ed25519PublicKey.from_public_bytes(root.public_key).verify(
        base64.urlsafe_b64decode(pad(sig)), f"{head}.{body}".encode()
    )
    decoded = cap.decode(token)
    assert decoded.iss == root.did and decoded.att == (cap.Grant(RES, "channel/publish"),)
    assert cap.encode(decoded) == token


def test_sign_and_encode_misuse(root: Identity, alice: Identity) -> None:
    unsigned = cap.create(root, alice, [(RES, "*")], now=NOW)
    with pytest.raises(ValueError, match="not signed"):
        cap.encode(unsigned)
    with pytest.raises(ValueError, match="not the issuer"):
        cap.sign(unsigned, alice)
    signed = cap.sign(unsigned, root.private_key or b"")
    with pytest.raises(ValueError, match="already signed"):
        cap.sign(signed, root)
    with pytest.raises(ValueError, match="did:key"):
        cap.create("did:web:x", alice, [])


def test_verify_and_authorize(root: Identity, alice: Identity) -> None:
    token = _token(root, alice, [("esdb://default/channel/events/user.*", "channel/publish")])
    trusted = [root.did]
    assert cap.verify(token, trusted_issuers=trusted, now=NOW + 1).aud == alice.did
    cap.authorize(token, RES, "channel/publish", trusted_issuers=trusted, now=NOW + 1)
    cap.authorize(token, "esdb://default/channel/events/user.", "channel/publish", trusted_issuers=trusted, now=NOW)
    for resource, action in (
        (RES, "channel/subscribe"),
        ("esdb://default/channel/events/order.created", "channel/publish"),
        ("esdb://default/channel/system/user.created", "channel/publish"),
        ("esdb://other/channel/events/user.created", "channel/publish"),
    ):
        with pytest.raises(CapabilityError) as exc:
            cap.authorize(token, resource, action, trusted_issuers=trusted, now=NOW)
        assert _reason(exc) == "insufficient_permissions"
        assert exc.value.details["resource"] == resource


def test_wildcard_actions_and_admin(root: Identity, alice: Identity) -> None:
    admin = _token(root, alice, [("esdb://default/*", "*")])
    cap.authorize(admin, "esdb://default/stream/orders-1", "stream/append", trusted_issuers=[root.did], now=NOW)
    chan = _token(root, alice, [("esdb://default/channel/*", "channel/*")])
    cap.authorize(chan, RES, "channel/subscribe", trusted_issuers=[root.did], now=NOW)
    with pytest.raises(CapabilityError):
        cap.authorize(chan, "esdb://default/stream/x", "stream/read", trusted_issuers=[root.did], now=NOW)
    assert cap.stream_resource("r", "s-1") == "esdb://r/stream/s-1"
    assert cap.channel_resource("r", "alerts", "a.b") == "esdb://r/channel/alerts/a.b"


@pytest.mark.parametrize(
    ("kwargs", "at", "reason"),
    [
        ({"ttl_s": 60}, NOW + 61, "expired"),
        ({"nbf": NOW + 3600}, NOW, "not_yet_valid"),
    ],
)
def test_time_window(root: Identity, alice: Identity, kwargs: dict[str, int], at: int, reason: str) -> None:
    token = _token(root, alice, [(RES, "channel/publish")], **kwargs)
    with pytest.raises(CapabilityError) as exc:
        cap.verify(token, trusted_issuers=[root.did], now=at)
    assert _reason(exc) == reason
    cap.verify(token, trusted_issuers=[root.did], now=at, leeway_s=3600)  # a leeway covers clock skew


def test_invalid_signatures(root: Identity, alice: Identity) -> None:
    token = _token(root, alice, [(RES, "channel/publish")])
    head, body, sig = token.split(".")
    other = _token(root, alice, [(RES, "*")]).split(".")
    forged_payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged_payload["att"] = [{"with": "esdb://default/*", "can": "*"}]
    forged_body = base64.urlsafe_b64encode(json.dumps(forged_payload).encode()).rstrip(b"=").decode()
    sig_bytes = bytearray(base64.urlsafe_b64decode(sig + "=="))
    sig_bytes[0] ^= 1
    flipped = base64.urlsafe_b64encode(bytes(sig_bytes)).rstrip(b"=").decode()
    for bad in (f"{head}.{forged_body}.{sig}", f"{head}.{body}.{other[2]}", f"{head}.{body}.{flipped}"):
        with pytest.raises(CapabilityError) as exc:
            cap.verify(bad, trusted_issuers=[root.did], now=NOW)
        assert _reason(exc) == "invalid_signature"
    unsigned = cap.create(root, alice, [(RES, "*")], now=NOW)
    with pytest.raises(CapabilityError) as exc:
        cap.verify(unsigned, now=NOW)
    assert _reason(exc) == "invalid_signature"


@pytest.mark.parametrize(
    "token",
    [
        "invalid_token",
        "a.b",
        "a.b.c.d",
        "",
        "!!!.???.***",
        base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=") + ".e30.",
        base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=") + ".e30.c2ln",
        base64.urlsafe_b64encode(b'{"alg":"EdDSA","typ":"JWT"}').decode().rstrip("=") + ".bm90IGpzb24.c2ln",
        base64.urlsafe_b64encode(b'{"alg":"EdDSA","typ":"JWT"}').decode().rstrip("=") + ".e30.c2ln",
        "x" * 40_000,
    ],
)
def test_parse_errors(token: str) -> None:
    with pytest.raises(CapabilityError) as exc:
        cap.verify(token)
    assert _reason(exc) == "parse_error"


def test_trust_and_audience(root: Identity, alice: Identity) -> None:
    token = _token(alice, alice, [(RES, "*")])  # self-issued: anyone can make one
    with pytest.raises(CapabilityError) as exc:
        cap.verify(token, trusted_issuers=[root.did], now=NOW)
    assert _reason(exc) == "untrusted_issuer"
    with pytest.raises(CapabilityError) as exc:
        cap.verify(token, trusted_issuers=[], now=NOW)
    assert _reason(exc) == "untrusted_issuer"
    service = Identity.generate()
    to_service = _token(root, service, [(RES, "*")])
    cap.verify(to_service, trusted_issuers=[root.did], audience=service.did, now=NOW)
    with pytest.raises(CapabilityError) as exc:
        cap.verify(_token(root, alice, [(RES, "*")]), trusted_issuers=[root.did], audience=service.did, now=NOW)
    assert _reason(exc) == "audience_mismatch"


def test_modes() -> None:
    assert cap.check("disabled", "garbage", RES, "channel/publish") is None
    assert cap.check("optional", None, RES, "channel/publish") is None
    assert cap.check("optional", "", RES, "channel/publish") is None
    with pytest.raises(CapabilityError) as exc:
        cap.check("optional", "garbage", RES, "channel/publish")
    assert _reason(exc) == "parse_error"
    with pytest.raises(CapabilityError) as exc:
        cap.check("required", None, RES, "channel/publish")
    assert _reason(exc) == "capability_required"


# --- delegation -------------------------------------------------------------------------------------


def test_delegation_to_a_subset_with_the_proof_chain(root: Identity, alice: Identity) -> None:
    bob, carol = Identity.generate(), Identity.generate()
    parent = _token(root, alice, [("esdb://default/channel/events/*", "channel/*")], ttl_s=600)
    child = cap.delegate(
        parent, bob, [("esdb://default/channel/events/user.*", "channel/publish")], ttl_s=3600, now=NOW
    )
    assert child.iss == alice.did and child.aud == bob.did
    assert child.exp == NOW + 600  # clamped to the parent's expiry
    assert child.prf == (parent,)
    child_token = cap.encode(cap.sign(child, alice))
    got = cap.authorize(child_token, RES, "channel/publish", trusted_issuers=[root.did], now=NOW + 1)
    assert got.aud == bob.did
    with pytest.raises(CapabilityError) as exc:
        cap.authorize(child_token, RES, "channel/subscribe", trusted_issuers=[root.did], now=NOW + 1)
    assert _reason(exc) == "insufficient_permissions"
    # a second hop
    grandchild = cap.sign(cap.delegate(child_token, carol, [(RES, "channel/publish")], now=NOW), bob)
    cap.authorize(cap.encode(grandchild), RES, "channel/publish", trusted_issuers=[root.did], now=NOW + 1)
    # the chain dies with its root
    with pytest.raises(CapabilityError) as exc:
        cap.verify(cap.encode(grandchild), trusted_issuers=[root.did], now=NOW + 601)
    assert _reason(exc) == "expired"
    with pytest.raises(CapabilityError) as exc:
        cap.verify(cap.encode(grandchild), trusted_issuers=[Identity.generate().did], now=NOW + 1)
    assert _reason(exc) == "untrusted_issuer"


def test_over_broad_delegation_is_refused(root: Identity, alice: Identity) -> None:
    bob = Identity.generate()
    parent = _token(root, alice, [("esdb://default/channel/events/user.*", "channel/publish")])
    for grants in (
        [("esdb://default/channel/events/*", "channel/publish")],  # broader resource
        [("esdb://default/channel/events/user.created", "channel/subscribe")],  # another action
        [("esdb://default/channel/events/user.created", "*")],  # every action
    ):
        with pytest.raises(CapabilityError) as exc:
            cap.delegate(parent, bob, grants, now=NOW)
        assert _reason(exc) == "insufficient_permissions"
    # built by hand to get past delegate(): verification still catches it
    forged = replace(cap.create(alice, bob, [("esdb://default/channel/*", "*")], now=NOW), prf=(parent,))
    forged_token = cap.encode(cap.sign(forged, alice))
    with pytest.raises(CapabilityError) as exc:
        cap.authorize(forged_token, RES, "channel/publish", trusted_issuers=[root.did], now=NOW)
    assert _reason(exc) == "insufficient_permissions"
    # and one that outlives its proof
    longer = replace(cap.create(alice, bob, [(RES, "channel/publish")], ttl_s=90_000, now=NOW), prf=(parent,))
    with pytest.raises(CapabilityError) as exc:
        cap.verify(cap.encode(cap.sign(longer, alice)), trusted_issuers=[root.did], now=NOW)
    assert _reason(exc) == "insufficient_permissions"


def test_a_link_signed_by_someone_else_is_an_audience_mismatch(root: Identity, alice: Identity) -> None:
    mallory, bob = Identity.generate(), Identity.generate()
    parent = _token(root, alice, [(RES, "channel/publish")])  # for alice, not mallory
    stolen = replace(cap.create(mallory, bob, [(RES, "channel/publish")], now=NOW), prf=(parent,))
    with pytest.raises(CapabilityError) as exc:
        cap.verify(cap.encode(cap.sign(stolen, mallory)), trusted_issuers=[root.did], now=NOW)
    assert _reason(exc) == "audience_mismatch"


def test_grant_coverage() -> None:
    g = cap.Grant
    assert g("esdb://r/channel/*", "*").covers(g("esdb://r/channel/a/b", "channel/publish"))
    assert g("esdb://r/channel/*", "channel/*").covers(g("esdb://r/channel/a/*", "channel/subscribe"))
    assert not g("esdb://r/channel/a/*", "*").covers(g("esdb://r/channel/*", "channel/publish"))
    assert not g("esdb://r/channel/a", "*").covers(g("esdb://r/channel/a*", "channel/publish"))
    assert g("esdb://r/channel/a", "*").covers(g("esdb://r/channel/a", "*"))
    assert cap.resource_matches("esdb://r/channel/a/*", "esdb://r/channel/a/x.y")
    assert not cap.resource_matches("esdb://r/channel/a/x", "esdb://r/channel/a/x.y")
