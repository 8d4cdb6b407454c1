"""A run's cache of learned-reward scores, keyed by (reward, input text).

The input text is what the model actually reads: the reward model's chat-templated prompt +
completion, the judge's filled-in rubric (question, completion, reference). Equal keys mean
equal scores, so the samples of a group that happen to coincide (common with short answers)
are scored once, and so is a completion that comes back in a later step.

Only successful scores are stored. A failure is remembered for one read (:meth:`take_failure`)
so that the reward set's per-sample retry after a failed batch reports it without asking the
model again; the next step asks afresh.

Hit rate = hits / (hits + misses), counted per lookup of one sample (0 when nothing was looked
up). The cache is bounded: past ``max_entries`` the oldest entries go first.

>>> c = ScoreCache(max_entries=2)
>>> c.put("a", 1.0); c.put("b", 2.0)
>>> c.get("a"), c.get("zz"), c.stats().hit_rate
(1.0, None, 0.5)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable, NamedTuple


class CacheStats(NamedTuple):
    hits: int
    misses: int
    entries: int

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


class ScoreCache:
    """Scores by key, oldest evicted past ``max_entries``; thread-safe."""

    def __init__(self, max_entries: int = 100_000, enabled: bool = True):
        self.max_entries = int(max_entries)
        self.enabled = enabled
        self._scores: OrderedDict[Hashable, float] = OrderedDict()
        self._failures: dict[Hashable, str] = {}
        self._hits = 0
        self._misses = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> float | None:
        """The stored score, or None (counted as a miss)."""
        with self._lock:
            if self.enabled and key in self._scores:
                self._hits += 1
                return self._scores[key]
            self._misses += 1
            return None

    def count_hit(self) -> None:
        """Count a hit served outside the store (a duplicate within one call)."""
        with self._lock:
            self._hits += 1

    def put(self, key: Hashable, score: float) -> None:
        with self._lock:
            self._failures.pop(key, None)
            if not self.enabled:
                return
            self._scores[key] = float(score)
            self._scores.move_to_end(key)
            while len(self._scores) > self.max_entries:
                self._scores.popitem(last=False)

    def put_failure(self, key: Hashable, message: str) -> None:
        with self._lock:
            self._failures[key] = message

    def take_failure(self, key: Hashable) -> str | None:
        """The failure stored for ``key`` (then forgotten), or None."""
        with self._lock:
            return self._failures.pop(key, None)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._scores))

    def clear(self) -> None:
        with self._lock:
            self._scores.clear()
            self._failures.clear()
            self._hits = self._misses = 0


class SampleFailure(NamedTuple):
    """What a scorer returns for one input it could not score (the message says why)."""

    message: str


class ScoringFailed(RuntimeError):
    """Raised by a learned reward when some samples of a call failed (see :func:`cached_scores`)."""


def cached_scores(cache: ScoreCache, keys: list[Hashable], compute, *, raise_on_failure: bool = True,
                  floor: float = 0.0) -> tuple[list[float], int]:
    """Scores of ``keys`` through ``cache``; ``compute(unique_missing_keys)`` scores the rest.

    ``compute`` returns one float or :class:`SampleFailure` per key it gets. With
    ``raise_on_failure`` (the reward-set way) a call with failed samples raises
    :class:`ScoringFailed`; for a call of several samples the failures are remembered for one
    read, so the reward set's per-sample retry gets the successes from the cache and the
    failures' own messages, without asking the model again. Otherwise failed samples get
    ``floor``. Returns (scores, number of failed samples).
    """
    n = len(keys)
    out: list[float | None] = [None] * n
    failed: dict[int, str] = {}
    todo: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        message = cache.take_failure(key)
        if message is not None:
            failed[i] = message
        elif key in todo:  # the same input twice in one call: scored once
            cache.count_hit()
            todo[key].append(i)
        elif (value := cache.get(key)) is not None:
            out[i] = value
        else:
            todo[key] = [i]
    results = compute(list(todo)) if todo else []
    if len(results) != len(todo):
        raise RuntimeError(f"scorer returned {len(results)} results for {len(todo)} inputs")
    for key, result in zip(todo, results):
        for i in todo[key]:
            if isinstance(result, SampleFailure):
                failed[i] = result.message
            else:
                out[i] = float(result)
        if not isinstance(result, SampleFailure):
            cache.put(key, float(result))
    if failed and raise_on_failure:
        first = failed[min(failed)]
        if n > 1:
            for i, message in failed.items():
                cache.put_failure(keys[i], message)
        raise ScoringFailed(first if n == 1 else f"{len(failed)} of {n} samples failed; first: {first}")
    for i in failed:
        out[i] = floor
    return [float(v) for v in out], len(failed)  # type: ignore[arg-type]


def cache_metrics(reward_set) -> dict[str, float]:
    """``rewards/<name>/cache_hit_rate`` (since the run began) of each reward in the set that caches.

    For a trainer's per-step metrics: ``metrics.update(cache_metrics(reward_set))``.
    """
    out: dict[str, float] = {}
    for name, fn in zip(reward_set.names, reward_set.fns):
        cache = getattr(fn, "cache", None)
        if isinstance(cache, ScoreCache):
            out[f"rewards/{name}/cache_hit_rate"] = cache.stats().hit_rate
    return out
