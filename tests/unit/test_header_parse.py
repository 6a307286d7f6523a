"""``FastClient._parse_header_lines`` (header names checked once and remembered) against the
per-line rule it replaced, on random header blocks: odd names, whitespace, non-ASCII, empty
names, colons in values, repeats, and more distinct names than the memo holds."""

from __future__ import annotations

import random
import re

from esdb_gater.shared.core import connection
from esdb_gater.shared.core.connection import FastClient

_WS = re.compile(r"\s")


def reference(raw: bytes) -> dict[str, str]:
    """The parser before the memo (issue 11), kept as the rule."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if _WS.search(key):
            continue
        out[key] = value.strip().decode("utf-8", "replace")
    return out


NAMES = [b"Nats-Stream", b" Esdb-Version ", b"Bad Name", b"", b"K\x00", b"N\xc3\xa9", b"x\ty", b"Nats-Sequence"]
VALUES = [b"", b" v ", b"a:b", b"\xff\xfe", b"2026-12-08T01:22:56Z", b"\xc3\xa9t\xc3\xa9"]


def test_the_memo_parses_like_the_rule() -> None:
    rnd = random.Random(3)
    for i in range(5000):
        lines = []
        for _ in range(rnd.randint(0, 8)):
            name = rnd.choice(NAMES) if rnd.random() < 0.8 else f"X-{i}-{rnd.randint(0, 99)}".encode()
            lines.append(name + (b":" if rnd.random() < 0.95 else b"") + rnd.choice(VALUES))
        raw = b"\r\n".join(lines) + b"\r\n\r\n"
        assert FastClient._parse_header_lines(raw) == reference(raw), raw
    assert len(connection._HEADER_KEYS) <= connection._HEADER_KEYS_MAX  # bounded, though >512 names came
