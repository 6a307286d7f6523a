"""Client-supplied regular expressions, run in linear time (RE2, ``google-re2``).

Every regular expression a client hands the gateway (JSON Schema ``pattern`` and
``patternProperties`` in the schema registry, link filters with ``matches``) is compiled and run
by RE2, never by Python's backtracking ``re``: matching is linear in the text, so no pattern can
make one request take exponential time (``^(a+)+$`` against ``"a"*25+"!"`` is a few microseconds).
Patterns RE2 cannot run (backreferences, lookaround) are refused when they are registered, with
``invalid_request`` and the reason (docs/adr/0017-linear-patterns-and-index-repair.md).

Bounds, so compiling and caching cannot eat memory or time either:

* a pattern is at most ``MAX_PATTERN_CHARS`` characters;
* RE2's memory budget per pattern is ``MAX_MEM`` (its program and lazily built DFA; a pattern
  whose program does not fit is refused as "too large"), and a program has at most
  ``MAX_PROGRAM_SIZE`` instructions (the constant of the linear bound);
* compiled patterns are kept in an LRU cache of ``CACHE_SIZE`` entries.

Matching is boolean (``search``): patterns are compiled with ``never_capture``, so RE2 answers
with its DFA and never runs the slower submatch engines. RE2 releases the GIL while it matches,
so ``run_matching`` can move a large validation off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, ParamSpec, TypeVar

import re2

__all__ = [
    "CACHE_SIZE",
    "MAX_MEM",
    "MAX_PATTERN_CHARS",
    "MAX_PROGRAM_SIZE",
    "PatternError",
    "check_pattern",
    "compile_pattern",
    "glob",
    "matcher",
    "run_matching",
    "search",
]

MAX_PATTERN_CHARS: Final = 1024
MAX_MEM: Final = 2 * 1024 * 1024
MAX_PROGRAM_SIZE: Final = 4096
CACHE_SIZE: Final = 128
MATCH_WORKERS: Final = 2

P = ParamSpec("P")
T = TypeVar("T")


class PatternError(ValueError):
    """A pattern the gateway does not run: ``reason`` says why (for ``details.reason``)."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(f"{reason}: {pattern[:100]!r}")
        self.pattern = pattern
        self.reason = reason


def _options() -> Any:
    o = re2.Options()
    o.max_mem = MAX_MEM
    o.log_errors = False
    o.never_capture = True
    return o


_OPTIONS: Final = _options()


@functools.lru_cache(maxsize=CACHE_SIZE)
def _compile(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(pattern, f"a pattern is at most {MAX_PATTERN_CHARS} characters")
    try:
        rx = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else "invalid"
        text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
        if text.startswith("invalid perl operator") or text.startswith("invalid escape sequence: \\"):
            text += " (RE2 syntax: no backreferences or lookaround)"
        raise PatternError(pattern, f"not a pattern RE2 runs: {text}") from None
    except (UnicodeError, TypeError):
        raise PatternError(pattern, "a pattern must be valid UTF-8 text") from None
    if rx.programsize > MAX_PROGRAM_SIZE or rx.reverseprogramsize > MAX_PROGRAM_SIZE:
        raise PatternError(pattern, f"the pattern is too large (more than {MAX_PROGRAM_SIZE} RE2 instructions)")
    return rx


def compile_pattern(pattern: str) -> Any:
    """The compiled pattern (cached); raises PatternError when the gateway does not run it."""
    if not isinstance(pattern, str):
        raise PatternError(repr(pattern), "a pattern must be a string")
    return _compile(pattern)


def check_pattern(pattern: Any) -> str | None:
    """Why ``pattern`` is refused, or None when it is fine."""
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return exc.reason
    return None


def search(pattern: str, text: str) -> bool:
    """True when ``pattern`` matches somewhere in ``text`` (``re.search`` semantics). Raises
    PatternError for a pattern the gateway does not run (a schema stored before patterns were
    checked)."""
    rx = compile_pattern(pattern)
    try:
        return rx.search(text) is not None
    except UnicodeEncodeError:  # a lone surrogate: match the text with it replaced
        return rx.search(text.encode("utf-8", "replace").decode("utf-8")) is not None


def matcher(pattern: str) -> Callable[[str], bool]:
    """``search`` with the pattern compiled once (a link filter holds its own)."""
    rx = compile_pattern(pattern)

    def match(text: str) -> bool:
        try:
            return rx.search(text) is not None
        except UnicodeEncodeError:
            return rx.search(text.encode("utf-8", "replace").decode("utf-8")) is not None

    return match


def _glob_options() -> Any:
    o = re2.Options()
    o.max_mem = MAX_MEM
    o.log_errors = False
    o.never_capture = True
    o.dot_nl = True
    return o


_GLOB_OPTIONS: Final = _glob_options()


def glob(pattern: str) -> Any:
    """A stream-id pattern (``*`` = any run of characters, also none; every other character
    literal) as an RE2 regex: use its ``fullmatch``. Linear time however many ``*`` it has
    (Python's ``re`` backtracks polynomially on ``*a*a*a…``)."""
    try:
        return re2.compile(".*".join(re2.escape(part) for part in pattern.split("*")), _GLOB_OPTIONS)
    except (re2.error, UnicodeError) as exc:
        raise PatternError(pattern, "not a stream-id pattern the gateway runs") from exc


_pool: ThreadPoolExecutor | None = None


async def run_matching(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` (work that matches patterns against client data) on a small dedicated thread
    pool, so however long it takes, the event loop keeps answering other requests."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(MATCH_WORKERS, thread_name_prefix="esdb-patterns")
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(fn, *args, **kwargs))
