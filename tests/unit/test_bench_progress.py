"""``gater bench``'s progress bar (bench/__main__.py ``ScenarioProgress``): on stderr, and only when
stderr is a terminal, so CI logs and the results table stay as they were."""

from __future__ import annotations

import io
import sys

import pytest

import esdb_gater.bench.__main__ as bench_main


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _run_two_scenarios(monkeypatch: pytest.MonkeyPatch, tty: bool) -> tuple[str, str]:
    err, out = _Stream(tty), _Stream(False)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    with bench_main.ScenarioProgress(["seq", "conc"]) as bar:
        for name in ("seq", "conc"):
            bar.start(name)
            bench_main.log(f"measuring {name}-row")
            bar.done()
    assert bench_main._bar is None  # log() stops feeding a finished bar
    return err.getvalue(), out.getvalue()


def test_without_a_terminal_stderr_has_only_the_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    err, out = _run_two_scenarios(monkeypatch, tty=False)
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0].endswith("] measuring seq-row") and lines[1].endswith("] measuring conc-row")
    assert "\x1b" not in err and "━" not in err  # no bar, no cursor control
    assert out == ""


def test_on_a_terminal_the_bar_is_drawn_on_stderr_and_stdout_stays_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    err, out = _run_two_scenarios(monkeypatch, tty=True)
    assert "measuring seq-row" in err and "measuring conc-row" in err  # the log lines still appear
    assert "\x1b" in err and "/2" in err  # a live bar over the 2 scenarios
    assert out == ""
