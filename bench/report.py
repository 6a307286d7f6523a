"""The markdown table (paste-ready for docs/performance.md) and the JSON numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from esdb_gater.bench.measure import Sample

__all__ = ["Check", "Report", "Row"]


@dataclass
class Row:
    scenario: str
    path: str  # "gateway", "raw …", "zero-work hop"
    sample: Sample | None = None
    ratio: str = ""  # the ratio cell, e.g. "0.41"
    target: str = ""  # e.g. "≥ 0.35 ✓"
    note: str = ""
    value: str = ""  # for rows without a sample (RSS)


def _cpu_per_op(sample: Sample) -> str:
    """CPU time per operation of whichever answered it (the service, else the zero-work responder)."""
    busy = sample.cpu.get("service") or sample.cpu.get("zero-work") or 0.0
    if busy <= 0 or sample.ops_s <= 0:
        return "-"
    return f"{busy / 100 * 1e6 / sample.ops_s:.0f} µs"


@dataclass
class Check:
    name: str
    value: float
    op: str  # ">=" or "<=" or "<"
    target: float

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        if self.op == ">=":
            return self.value >= self.target
        if self.op == "<=":
            return self.value <= self.target
        return self.value < self.target

    def fmt(self) -> str:
        """The value with 2 decimals, or 3 when 2 would print it equal to a target it misses."""
        text = f"{self.value:.2f}"
        if not self.met and float(text) == self.target:
            text = f"{self.value:.3f}"
        return text

    def target_cell(self) -> str:
        sym = {">=": "≥", "<=": "≤", "<": "<"}[self.op]
        return f"{sym} {self.target:g} {'✓ met' if self.met else '✗ missed'}"


def _num(x: float, digits: int = 0) -> str:
    if math.isnan(x):
        return "-"
    if digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def _ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    if x < 1:
        return f"{x:.3f}"
    if x < 100:
        return f"{x:.2f}"
    return f"{x:.0f}"


@dataclass
class Report:
    meta: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [
            "| scenario | path | ops/s | events/s | p50 ms | p99 ms | gateway ÷ raw | target | notes |",
            "|---|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in self.rows:
            s = r.sample
            if s is None:
                cells = [r.scenario, r.path, r.value or "-", "", "", "", r.ratio, r.target, r.note]
            else:
                err = f"; {s.errors} errors" if s.errors else ""
                cells = [
                    r.scenario,
                    r.path,
                    _num(s.ops_s),
                    _num(s.events_s),
                    _ms(s.p50),
                    _ms(s.p99),
                    r.ratio,
                    r.target,
                    r.note + err,
                ]
            out.append("| " + " | ".join(cells) + " |")
        return "\n".join(out)

    def markdown_cpu(self) -> str:
        """CPU per timed window, % of one core (200 % = both cores of a 2-core machine)."""
        names = ["client", "service", "nats-server", "zero-work", "other"]
        out = [
            "| scenario | path | " + " | ".join(names) + " | responder CPU per op |",
            "|---|---|" + "---:|" * (len(names) + 1),
        ]
        for r in self.rows:
            if r.sample is None or not r.sample.cpu:
                continue
            cpu = r.sample.cpu
            cells = [f"{cpu[n]:.0f} %" if n in cpu else "-" for n in names]
            out.append("| " + " | ".join([r.scenario, r.path, *cells, _cpu_per_op(r.sample)]) + " |")
        return "\n".join(out)

    def header(self) -> str:
        m = self.meta
        return "\n".join(
            [
                f"command: `{m['command']}`",
                f"date: {m['date']}; machine: {m['machine']}; project commit: {m['commit']}",
                f"versions: nats-server {m['nats_server']}, nats-py {m['nats_py']}, python {m['python']}"
                f"; storage: {m['storage']}, replicas: {m.get('replicas', 1)}"
                f" ({'one server' if m.get('replicas', 1) == 1 else 'a cluster of as many servers'})"
                f", sync_interval: {m.get('sync', 'default')}; window per row: {m['duration_s']:g} s"
                f"; client loop: {m['client_loop']}; stream-service instances: {m['service_instances']}",
                f"background load before the run: {m['background_load_pct_of_one_core']:.0f} % of one core",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "rows": [
                {
                    "scenario": r.scenario,
                    "path": r.path,
                    **(r.sample.to_json() if r.sample else {"value": r.value}),
                    "ratio": r.ratio,
                    "target": r.target,
                    "note": r.note,
                }
                for r in self.rows
            ],
            "checks": [
                {"name": c.name, "value": round(c.value, 4), "op": c.op, "target": c.target, "met": c.met}
                for c in self.checks
            ],
            "notes": self.notes,
        }
