"""Stopping on SIGTERM / SIGINT without losing steps: finish the step, checkpoint, exit.

While a run trains, SIGTERM and SIGINT only set a flag (:class:`StopSignals`); the loop asks
:meth:`StopSignals.agreed` after every step. All processes of a distributed run take the MAX of
their flags, so they stop after the same step even when only one was signalled. The loop then
writes a checkpoint and returns; ``gdpo train`` exits with 128 + the signal number (130 for
SIGINT, 143 for SIGTERM) and says how to resume. A second signal stops at once
(KeyboardInterrupt): the checkpoints already written are complete (they are atomic). Signals
within :data:`ECHO_S` of the first count as the same request: Ctrl-C under torchrun reaches a
worker twice (SIGINT from the terminal, then SIGTERM from the launcher). torchrun kills workers
30 s after its SIGTERM, so there a step plus its checkpoint must fit in that time.

Handlers are installed only in the main thread (Python allows no other) and the previous ones
come back when the run ends.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import TracebackType

import torch

from gdpo.train import dist

SIGNALS = (signal.SIGTERM, signal.SIGINT)
ECHO_S = 2.0  # seconds after the first signal during which more signals are the same request


class StopSignals:
    """A context manager: while inside, SIGTERM / SIGINT request a stop after the current step."""

    def __init__(self) -> None:
        self.signum = 0  # the first signal received (0 = none)
        self.since = 0.0  # when it came (time.monotonic())
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum:
            if time.monotonic() - self.since < ECHO_S:
                return  # the same request again (e.g. from a launcher)
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): stopping at once")
        self.signum, self.since = signum, time.monotonic()
        print(f"[gdpo] {signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def agreed(self, info: dist.DistInfo) -> int:
        """The signal every process stops for (0 = go on): the largest over processes, so all agree."""
        if not info.enabled:
            return self.signum
        return int(dist.all_reduce_max(torch.tensor([self.signum], dtype=torch.int64), info)[0])


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
