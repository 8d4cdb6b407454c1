"""Small file helpers shared by the writers of run outputs and reports.

Outputs are written to a temporary file and renamed into place, so a reader (or a killed
writer) never sees half a file; JSON-lines readers stop at a line cut short by a killed writer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is flushed to disk and renamed onto
    ``path``, on an exception it is removed and ``path`` is left as it was. The one atomic writer:
    text, JSON and figures (``fig.savefig(tmp, format=...)``) all go through it.

    The temporary name carries the process id, so two processes writing the same file never
    share a temporary; it keeps the suffix, so tools that infer a format from it still can.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path`; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of ``path`` ([] when absent); stops at a half-written line."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out
