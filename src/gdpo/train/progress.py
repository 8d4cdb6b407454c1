"""Progress display: a tqdm bar on a terminal, plain lines otherwise (logs, CI).

``mode``: ``bar`` (tqdm; plain lines if tqdm is missing), ``lines`` (always plain lines on
stdout), ``auto`` (a bar only when BOTH stdout and stderr are terminals: with either one
redirected to a file, ``gdpo train > log`` or ``2> log``, the log gets plain lines, never
carriage-return bar frames). A plain line is printed every ``max(1, total // 50)`` steps and
at the last step.
"""

from __future__ import annotations

import sys
from typing import Any

from gdpo.train.metrics import reward_components


def _short(metrics: dict[str, float]) -> dict[str, str]:
    """The few figures worth watching live."""
    out = {"reward": f"{metrics.get('rewards/total/mean', float('nan')):.3f}"}
    for name in reward_components(metrics):
        out[name] = f"{metrics[f'rewards/{name}/mean']:.2f}"
    out["adv_distinct"] = f"{metrics.get('advantages/distinct_per_group', float('nan')):.2f}"
    out["len"] = f"{metrics.get('completions/length_mean', float('nan')):.1f}"
    out["s/step"] = f"{metrics.get('time/step_s', float('nan')):.2f}"
    return out


def on_terminal(*streams: Any) -> bool:
    """Whether every stream is an interactive terminal (default: stdout and stderr)."""
    streams = streams or (sys.stdout, sys.stderr)
    return all(bool(getattr(s, "isatty", lambda: False)()) for s in streams)


class Progress:
    """Shows each step's headline figures."""

    def __init__(self, total: int, start: int, mode: str = "auto", enabled: bool = True):
        self.total, self.enabled, self.bar = total, enabled, None
        use_bar = mode == "bar" or (mode == "auto" and on_terminal())
        if enabled and use_bar:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=start, desc="gdpo train", dynamic_ncols=True)
            except ImportError:
                self.bar = None
        self.every = max(1, total // 50)

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        figures = _short(metrics)
        if self.bar is not None:
            self.bar.set_postfix(figures, refresh=False)
            self.bar.update(1)
        elif step % self.every == 0 or step == self.total:
            print(f"step {step}/{self.total} " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
