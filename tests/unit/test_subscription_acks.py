"""The subscription driver's ack bookkeeping without a server (ADR 0024): JetStream reply-subject
parsing, ack policy "all" (one JetStream ack for the highest finished prefix), cumulative acks,
the take-over hold, batch acks, definitions saved before the options, and the model bounds."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from esdb_gater.services.subscription.driver import Driver, js_meta
from esdb_gater.services.subscription.store import Definition
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log import lease as lease_module
from esdb_gater.shared.log.lease import Lease
from esdb_gater.shared.models.subscription import SaveRequest, SubscriptionInfo, SubscriptionsResponse
from tests.unit.fake_kv import FakeKV


class FakeMsg:
    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.calls: list[str] = []

    async def ack(self) -> None:
        self.calls.append("ack")

    async def nak(self) -> None:
        self.calls.append("nak")


def _def(**kw: Any) -> Definition:
    base: dict[str, Any] = {
        "store": "s",
        "key": "k" * 32,
        "type": "stream",
        "selector": "$all",
        "name": "n",
        "subscriber": "x.y",
        "start_from": "start",
        "created_at": 0,
        "max_in_flight": 100,
        "ack_wait_ms": 1000,
        "max_deliver": 5,
        "backoff_ms": None,
        "codec": "json",
        "filter_subject": "esdb.log.s.>",
    }
    return Definition(**(base | kw))


def _driver(**kw: Any) -> Driver:
    return Driver(None, None, Subjects("esdb"), _def(**kw))  # type: ignore[arg-type]


def _deliver(drv: Driver, seq: int, versions: list[int], stream: str = "st") -> FakeMsg:
    """A commit as _handle leaves it: pending, its events indexed."""
    msg = FakeMsg(seq)
    entry = drv._new_entry(seq, msg, stream)  # type: ignore[arg-type]
    for v in versions:
        entry.remaining[v] = {"stream_id": stream, "version": v, "position": seq}
        drv.by_event[(stream, v)] = seq
    return msg


def test_js_meta_reads_both_reply_subject_forms() -> None:
    assert js_meta("$JS.ACK.esdb-log-s.sub-k.2.17.40.1700000000000000000.5") == (17, 2, 5, 1700000000000000000)
    assert js_meta("$JS.ACK.hub.ACCHASH.esdb-log-s.sub-k.1.9.9.1700000000000000001.0.tok") == (
        9,
        1,
        0,
        1700000000000000001,
    )
    for bad in (None, "", "_INBOX.x", "$JS.ACK.a.b.c", "$JS.ACK.s.c.x.1.2.3.4"):
        assert js_meta(bad) is None


async def test_ack_all_acks_once_for_the_highest_finished_prefix() -> None:
    drv = _driver(consumer_ack="all")
    m1, m2, m3 = _deliver(drv, 1, [0]), _deliver(drv, 2, [1, 2]), _deliver(drv, 3, [3])
    assert await drv.ack("st", 3) and await drv.ack("st", 1)
    assert (m1.calls, m2.calls, m3.calls) == ([], [], [])  # commit 1 is open: nothing may be acked
    assert drv.undone == 2
    await drv.ack("st", 0)  # 1 finished; 2 still has version 2 open
    assert (m1.calls, m2.calls, m3.calls) == (["ack"], [], [])
    await drv.ack("st", 2)  # 2 and 3 finished: one ack, on 3, covers both
    assert (m2.calls, m3.calls) == ([], ["ack"])
    assert drv.pending == {} and drv.undone == 0 and not drv.order
    assert not await drv.ack("st", 2)  # twice: harmless


async def test_explicit_acks_each_commit_on_its_own() -> None:
    drv = _driver()
    m1, m2 = _deliver(drv, 1, [0]), _deliver(drv, 2, [1])
    await drv.ack("st", 1)
    assert (m1.calls, m2.calls) == ([], ["ack"])
    await drv.ack("st", 0)
    assert m1.calls == ["ack"]


@pytest.mark.parametrize("policy", ["explicit", "all"])
async def test_cumulative_ack_finishes_everything_before_it(policy: str) -> None:
    drv = _driver(consumer_ack=policy)
    m1, m2, m3 = _deliver(drv, 1, [0], "a"), _deliver(drv, 2, [0, 1, 2], "b"), _deliver(drv, 3, [5], "c")
    assert await drv.ack("b", 1, cumulative=True)  # all of commit 1, versions 0..1 of commit 2
    assert drv.pending[2].remaining.keys() == {2}
    assert drv.pending.keys() >= {3}
    assert m1.calls == ["ack"] and m2.calls == [] and m3.calls == []
    await drv.ack("c", 5, cumulative=True)
    if policy == "all":
        assert (m2.calls, m3.calls) == ([], ["ack"])  # one JetStream ack for both
    else:
        assert (m2.calls, m3.calls) == (["ack"], ["ack"])
    assert drv.undone == 0


async def test_the_definitions_ack_mode_is_the_default_and_a_request_overrides_it() -> None:
    drv = _driver(ack="cumulative", consumer_ack="all")
    _deliver(drv, 1, [0]), _deliver(drv, 2, [1])
    await drv.ack("st", 1, cumulative=False)
    assert drv.undone == 1 and 1 in drv.pending
    await drv.ack("st", 0)
    assert drv.undone == 0


async def test_batch_acks_and_naks() -> None:
    drv = _driver(delivery="batch", consumer_ack="all")
    m1, m2, m3 = _deliver(drv, 1, [0]), _deliver(drv, 2, [1]), _deliver(drv, 3, [2])
    await drv.nak_batch([(2, 1), (3, 2)])
    assert (m1.calls, m2.calls, m3.calls) == ([], ["nak"], ["nak"])
    await drv.ack_batch([(2, 1), (3, 2)])
    assert m3.calls == ["nak"]  # 1 is open
    await drv.ack_batch([(1, 0)])
    assert m3.calls == ["nak", "ack"] and m1.calls == [] and drv.pending == {}


async def test_a_take_over_holds_every_jetstream_ack_until_the_leftovers_came_back() -> None:
    drv = _driver(consumer_ack="all")
    drv.hold = (10, 2)  # the previous holder left 2 commits unacked at or below stream seq 10
    drv.hold_checked = float("inf")  # no consumer-info look in this test
    m20 = _deliver(drv, 20, [0])
    await drv.ack("st", 0)
    assert m20.calls == [] and 20 in drv.pending  # a leftover may sit below 20
    drv.hold_seen.update({4, 7})  # both came back (as _handle records them)
    m4, m7 = _deliver(drv, 4, [1], "o"), _deliver(drv, 7, [2], "o")
    await drv.ack("o", 1)
    assert drv.hold is None and m4.calls == ["ack"] and m20.calls == []
    await drv.ack("o", 2)
    assert (m7.calls, m20.calls) == ([], ["ack"])


def test_a_definition_saved_before_the_options_loads_with_todays_behaviour() -> None:
    old = _def().to_json()
    raw = json.loads(old)
    for field in ("delivery", "batch_max", "ack", "consumer_ack"):
        raw.pop(field)
    d = Definition.from_json(json.dumps(raw).encode())
    assert (d.delivery, d.batch_max, d.ack, d.consumer_ack) == ("event", 100, "each", "explicit")


def test_save_request_bounds_and_defaults() -> None:
    base = {"type": "stream", "selector": "a", "name": "n", "subscriber": "x.y"}
    req = SaveRequest.model_validate(base)
    assert (req.delivery, req.batch_max, req.ack) == ("event", 100, "each")
    for bad in ({"batch_max": 0}, {"batch_max": 1001}, {"delivery": "bulk"}, {"ack": "all"}, {"batch_max": True}):
        with pytest.raises(ValidationError):
            SaveRequest.model_validate(base | bad)
    assert SaveRequest.model_validate(base | {"delivery": "batch", "batch_max": 1000}).batch_max == 1000


def test_replies_omit_the_options_left_at_their_defaults() -> None:
    base: dict[str, Any] = {
        "type": "stream",
        "selector": "a",
        "name": "n",
        "key": "k",
        "subscriber": "x",
        "start_from": "start",
        "created_at": 0,
        "checkpoint": None,
        "checkpoint_position": 0,
        "lag_events": 0,
        "lag_seconds": 0.0,
        "parked": 0,
        "max_in_flight": 1,
        "ack_wait_ms": 100,
        "max_deliver": 1,
        "backoff_ms": None,
        "codec": "json",
        "active": False,
    }
    plain = SubscriptionInfo(**base)
    assert not {"delivery", "batch_max", "ack"} & set(plain.to_wire())
    batched = SubscriptionInfo(**base, delivery="batch", batch_max=50, ack="cumulative")
    assert {k: batched.to_wire()[k] for k in ("delivery", "batch_max", "ack")} == {
        "delivery": "batch",
        "batch_max": 50,
        "ack": "cumulative",
    }
    listed = SubscriptionsResponse(subscriptions=[plain, batched]).to_wire()["subscriptions"]
    assert "delivery" not in listed[0] and listed[1]["delivery"] == "batch"


def test_batch_ack_subjects_parse() -> None:
    s = Subjects("esdb")
    subject = s.subscription_batch_ack("st", "k", "ab12", 7)
    ctl = s.parse_subscription_control("st", "k", subject)
    assert ctl is not None and (ctl.kind, ctl.nonce, ctl.seq) == ("batch_ack", "ab12", 7)
    assert s.parse_subscription_control("st", "k", subject.replace(".7", ".x")) is None
    assert s.parse_subscription_control("st", "k", s.subscription_control("st", "k") + ".b.7") is None


async def test_a_cumulative_reply_to_an_event_acked_before_still_acks_the_earlier_ones() -> None:
    drv = _driver(ack="cumulative", consumer_ack="all")
    m1, m2 = _deliver(drv, 1, [0]), _deliver(drv, 2, [1])
    await drv.ack("st", 1, cumulative=False)  # 2 finished, held behind 1
    assert (m1.calls, m2.calls) == ([], [])
    assert await drv.ack_at(2, 1)  # the native reply to event 1 (position 2) once more: cumulative
    assert (m1.calls, m2.calls) == ([], ["ack"]) and drv.pending == {}


async def test_no_jetstream_ack_while_the_lease_may_be_running_out() -> None:
    """With ack policy all one ack covers commits another holder delivered: near the end of our
    lease (Supervisor.started wires ``may_ack`` to ``Lease.valid``) nothing is acked; the commits
    stay pending and are acked once the lease is renewed."""
    drv = _driver(consumer_ack="all")
    lease_ok = False
    drv.may_ack = lambda: lease_ok
    m1, m2 = _deliver(drv, 1, [0]), _deliver(drv, 2, [1])
    await drv.ack("st", 0)
    await drv.ack("st", 1)
    assert (m1.calls, m2.calls) == ([], [])
    assert list(drv.order) == [1, 2]  # still tracked
    lease_ok = True
    m3 = _deliver(drv, 3, [2])
    await drv.ack("st", 2)
    assert (m1.calls, m2.calls, m3.calls) == ([], [], ["ack"])  # one ack covers all three


async def test_a_lease_is_valid_until_a_margin_before_it_runs_out(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(lease_module, "time", SimpleNamespace(time=lambda: now[0]))
    lease = Lease(FakeKV(), "k", "me", ttl_s=4.0)
    assert not lease.valid(1.0)  # not taken yet
    assert await lease.acquire_or_renew()
    assert lease.valid(1.0)
    now[0] += 2.9
    assert lease.valid(1.0)
    now[0] += 0.2  # 3.1 s after taking it: within 1 s of its end
    assert not lease.valid(1.0)
    assert await lease.acquire_or_renew()
    assert lease.valid(1.0)
    await lease.release()
    assert not lease.valid(0.0)
