"""Which prompts each step sees: seeded epoch-wise shuffles, with a resumable position."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PromptSampler:
    """Yields batches of row indices; each epoch is a fresh permutation from (seed, epoch).

    The state is just (epoch, cursor), so a resumed run draws exactly the same batches.
    """

    num_rows: int
    batch_size: int
    seed: int = 0
    epoch: int = 0
    cursor: int = 0

    def __post_init__(self) -> None:
        if self.num_rows < 1:
            raise ValueError("the task has no training rows; check task.params (num_train, path)")

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_rows)

    def next_batch(self) -> list[int]:
        """The next ``batch_size`` indices, wrapping into new epochs as needed."""
        out: list[int] = []
        while len(out) < self.batch_size:
            order = self._order()
            take = min(self.batch_size - len(out), self.num_rows - self.cursor)
            out.extend(int(i) for i in order[self.cursor:self.cursor + take])
            self.cursor += take
            if self.cursor >= self.num_rows:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
