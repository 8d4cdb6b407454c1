"""Checking a final answer against a reference: plain-string rules, then math-verify in a worker.

The worker is one persistent process fed one item at a time over a pipe, with a per-item
deadline enforced by the caller with ``select`` (math-verify's own timeout uses
``signal.alarm``, which only works on the main thread). The worker dies with the process
that started it (a forked watcher on a pidfd of that process). See :mod:`gdpo.rewards.math`
for where the answer is read from and the rewards built on this; this module is the lower
layer and imports nothing from it (:class:`ExtractedAnswer` lives here, ``math`` re-exports it).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

DEFAULT_TIMEOUT_S = 5.0  # per-item verification deadline


@dataclass(frozen=True)
class ExtractedAnswer:
    """The final answer found in a response, and where it came from (read by :mod:`gdpo.rewards.math`)."""

    text: str
    source: Literal["answer_tag", "boxed"]


# ---------------------------------------------------------------------------------------
# Plain-string checks (no math-verify needed)
# ---------------------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)(?:\.0+)?")
_LATEX_SPACES = re.compile(r"\\[,!;: ]|\\quad|\\qquad|\s")


def _squeeze(answer: str) -> str:
    """``answer`` without whitespace, LaTeX spacing, ``$`` and a trailing period."""
    return _LATEX_SPACES.sub("", answer).replace("$", "").rstrip(".")


def as_integer(answer: str) -> int | None:
    """The integer ``answer`` spells (``"1,000"``, ``"-7"``, ``"12.0"``, ``"$5$"``), else None."""
    squeezed = _squeeze(answer)
    if len(squeezed) > 100 or not _INTEGER.fullmatch(squeezed):
        return None
    return int(squeezed.split(".")[0].replace(",", ""))


def _fast_verdict(gold: str, answer: str) -> bool | None:
    """True/False when plain string rules decide; None when math-verify must look."""
    if _squeeze(gold) == _squeeze(answer):
        return True
    gold_int, answer_int = as_integer(gold), as_integer(answer)
    if gold_int is not None and answer_int is not None:
        return gold_int == answer_int
    return None


def normalize_reference(gold: Any) -> str:
    """A reference answer as a non-empty string (``142.0`` -> ``"142"``, ``["9.6"]`` -> ``"9.6"``)."""
    if isinstance(gold, (list, tuple)):
        if not gold:
            raise ValueError("reference answer is an empty list; give the row an 'answer' string")
        gold = gold[0]
    if isinstance(gold, float) and gold.is_integer():
        gold = int(gold)
    if gold is None or not str(gold).strip():
        raise ValueError(f"reference answer {gold!r} is empty; give the row a non-empty 'answer' string")
    return str(gold).strip()


# ---------------------------------------------------------------------------------------
# The verification worker
# ---------------------------------------------------------------------------------------

VerifyStatus = Literal["fast", "cached", "verified", "timeout", "error"]


class VerifyOutcome(NamedTuple):
    """One verification: the verdict and how it was reached."""

    correct: bool
    status: VerifyStatus
    seconds: float


class MathVerifier:
    """Checks answers with math-verify in a persistent worker process, with a per-item deadline.

    Thread-safe (one lock around the worker); usable from any thread. The worker starts on
    first use; a worker that misses a deadline or dies is killed and replaced on the next call.

    timeout_s: per-item deadline, seconds (the item then scores 0 and is cached as wrong).
    startup_timeout_s: how long to wait for a (re)started worker to import math-verify.
    memory_limit_mb: address-space cap of the worker (``RLIMIT_AS``); None = no cap.
    cache_size: how many (reference, answer) verdicts to keep.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, *, startup_timeout_s: float = 120.0,
                 memory_limit_mb: int | None = 4096, cache_size: int = 100_000):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.memory_limit_mb = memory_limit_mb
        self.cache_size = int(cache_size)
        self.restarts = 0  # workers killed after a timeout or a crash
        self._cache: OrderedDict[tuple[str, str, str], bool] = OrderedDict()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = os.getpid()  # a forked child must not talk to (or kill) its parent's worker
        self._buffer = b""
        atexit.register(self.close)

    def verify(self, gold: str, answer: ExtractedAnswer) -> VerifyOutcome:
        """Whether ``answer`` equals the reference ``gold``."""
        started = time.perf_counter()
        fast = _fast_verdict(gold, answer.text)
        if fast is not None:
            return VerifyOutcome(fast, "fast", time.perf_counter() - started)
        key = (gold, answer.text, answer.source)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return VerifyOutcome(self._cache[key], "cached", time.perf_counter() - started)
            correct, status = self._ask_worker(key)
            self._remember(key, correct)
        return VerifyOutcome(correct, status, time.perf_counter() - started)

    def close(self) -> None:
        """Stop the worker (a later call starts a new one)."""
        proc, self._proc = self._proc, None
        self._buffer = b""
        if proc is not None and self._owner_pid != os.getpid():
            return  # inherited through fork: the worker belongs to the parent process, leave it
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass

    # -- worker plumbing ------------------------------------------------------------
    def _remember(self, key: tuple[str, str, str], correct: bool) -> None:
        self._cache[key] = correct
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _ask_worker(self, key: tuple[str, str, str]) -> tuple[bool, VerifyStatus]:
        proc = self._ensure_worker()
        try:
            proc.stdin.write((json.dumps(list(key)) + "\n").encode())
            proc.stdin.flush()
            reply = self._read_line(time.monotonic() + self.timeout_s)
        except (OSError, EOFError):
            self._kill_worker()
            return False, "error"
        if reply is None:  # deadline missed: the worker may be stuck forever, replace it
            self._kill_worker()
            return False, "timeout"
        try:
            message = json.loads(reply)
        except ValueError:  # not our protocol: resynchronise by replacing the worker
            self._kill_worker()
            return False, "error"
        return (bool(message.get("correct")), "verified") if "correct" in message else (False, "error")

    def _kill_worker(self) -> None:
        self.restarts += 1
        self.close()

    def _ensure_worker(self) -> subprocess.Popen:
        if self._proc is not None and self._owner_pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        self.close()
        self._owner_pid = os.getpid()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from gdpo.rewards.math_verifier import _worker_main; _worker_main()",
             str(self.memory_limit_mb or 0), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=_worker_env(), close_fds=True,
        )
        try:
            ready = self._read_line(time.monotonic() + self.startup_timeout_s)
        except EOFError:
            ready = json.dumps({"fatal": "it exited while starting"})
        message = json.loads(ready) if ready else {"fatal": f"no answer in {self.startup_timeout_s:.0f} s"}
        if "ready" not in message:
            self.close()
            raise RuntimeError(
                f"the math-verify worker did not start: {message.get('fatal')}. "
                "Install it with `pip install math-verify` (or `pip install gdpo[rewards]`)."
            )
        return self._proc

    def _read_line(self, deadline: float) -> str | None:
        """One line from the worker, or None at the deadline; EOFError if the worker died."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("math-verify worker exited")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def _worker_env() -> dict[str, str]:
    """The worker's environment: this package importable, one thread, no hub access."""
    import gdpo

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(gdpo.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _worker_main() -> None:
    """Worker process loop: read ``[gold, answer, source]`` lines, write ``{"correct": bool}``."""
    import functools
    import logging

    memory_limit_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if len(sys.argv) > 2:
        _die_with_parent(int(sys.argv[2]))
    if memory_limit_mb > 0:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        from math_verify import parse, verify
    except ImportError as exc:
        print(json.dumps({"fatal": f"cannot import math_verify ({exc})"}), flush=True)
        return
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    @functools.lru_cache(maxsize=20_000)
    def parse_gold(gold: str) -> list:
        return parse("\\boxed{" + gold + "}", parsing_timeout=None) or parse(gold, parsing_timeout=None)

    def candidates(answer: str, source: str):
        # A boxed answer parses like the reference; free text in <answer> is tried both ways.
        yield parse("\\boxed{" + answer + "}", parsing_timeout=None)
        if source == "answer_tag":
            yield parse(answer, parsing_timeout=None)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            gold, answer, source = json.loads(line)
            parsed_gold = parse_gold(gold)
            correct = any(
                bool(parsed) and verify(parsed_gold, parsed, timeout_seconds=None)
                for parsed in candidates(answer, source)
            )
            reply = {"correct": bool(correct)}
        except (Exception, MemoryError, RecursionError) as exc:  # noqa: BLE001 - report, keep serving
            reply = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        print(json.dumps(reply), flush=True)


def _die_with_parent(parent_pid: int) -> None:
    """Fork a watcher that SIGKILLs this worker as soon as ``parent_pid`` is gone.

    A thread would not do: math-verify can sit for minutes in one C call (a huge power)
    holding the GIL. Nor would ``PR_SET_PDEATHSIG``: it fires when the parent *thread* that
    started us ends, and the verifier may be first used from a short-lived pool thread.
    The watcher polls pidfds of both processes and exits with whichever ends first.
    """
    try:
        parent_fd = os.pidfd_open(parent_pid)
    except (AttributeError, OSError):
        parent_fd = -1
    if os.getppid() != parent_pid:  # the parent died before we could watch it
        os._exit(0)
    worker = os.getpid()
    if parent_fd < 0 or os.fork() != 0:
        return  # no pidfd here (old kernel): the worker still ends on EOF of its stdin
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # hold no end of the worker's pipes (EOF must still reach it)
        os.dup2(devnull, fd)
    try:
        worker_fd = os.pidfd_open(worker)
        ready, _, _ = select.select([parent_fd, worker_fd], [], [])
        if parent_fd in ready:
            os.kill(worker, signal.SIGKILL)
    finally:
        os._exit(0)


_DEFAULT_VERIFIER: MathVerifier | None = None
_DEFAULT_LOCK = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide verifier the registered rewards use (created on first use)."""
    global _DEFAULT_VERIFIER
    with _DEFAULT_LOCK:
        if _DEFAULT_VERIFIER is None:
            _DEFAULT_VERIFIER = MathVerifier()
        return _DEFAULT_VERIFIER
