"""Issue 11, item 10: no silent downgrade of the sandbox level.

Before: with a PATH lacking ``unshare`` the sandbox dropped to level ``uid`` without a word,
and there a program reached a 127.0.0.1 listener, wrote into host /tmp and read the
parent's command line. Now ``unshare`` is also looked up in the standard places, a level
below ``namespaces`` warns (naming the level and what it no longer blocks), and
``min_level`` refuses it; the code rewards default to ``min_level="namespaces"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gdpo.rewards import sandbox_levels
from gdpo.rewards.sandbox import (
    SandboxError,
    SandboxLimits,
    SandboxWeakLevelWarning,
    require_level,
    run_program,
    sandbox_capabilities,
)

CAPS = sandbox_capabilities()
FAST = SandboxLimits(cpu_seconds=1, wall_seconds=3, memory_bytes=256 * 1024**2, max_processes=8)


def test_a_path_without_unshare_keeps_the_namespaces_level(tmp_path):
    if CAPS.level != "namespaces":
        pytest.skip(f"namespaces unavailable here anyway: {CAPS.notes}")
    probe = "from gdpo.rewards.sandbox import sandbox_capabilities as c; print(c().level)"
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty folder: no unshare on PATH
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "namespaces"


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which levels already warned in this process."""
    monkeypatch.setattr(sandbox_levels, "_WARNED", set())


def test_a_weak_level_warns_naming_the_level_and_what_it_no_longer_blocks(fresh_warnings, monkeypatch):
    if not CAPS.is_root:
        pytest.skip("level 'uid' needs root")
    monkeypatch.setenv("GDPO_SANDBOX_LEVEL", "uid")
    with pytest.warns(SandboxWeakLevelWarning) as caught:
        result = run_program("print('hi')", limits=FAST)
    assert result.level == "uid" and result.stdout == "hi\n"
    message = str(caught[0].message)
    assert "'uid'" in message
    for blocked in ("network", "unix sockets", "/tmp", "/proc"):
        assert blocked in message, message
    with _no_warning():  # once per level and process
        run_program("print('again')", limits=FAST)


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not [r for r in self.records if issubclass(r.category, SandboxWeakLevelWarning)]


def test_min_level_refuses_a_weak_level_before_running_anything(monkeypatch, tmp_path):
    if not CAPS.is_root:
        pytest.skip("level 'uid' needs root")
    monkeypatch.setenv("GDPO_SANDBOX_LEVEL", "uid")
    marker = tmp_path / "ran"
    with pytest.raises(SandboxError, match="'uid' is below the required min_level 'namespaces'.*network"):
        run_program(f"open({str(marker)!r}, 'w')", limits=FAST, min_level="namespaces")
    assert not marker.exists()
    monkeypatch.setenv("GDPO_SANDBOX_MIN_LEVEL", "namespaces")
    with pytest.raises(SandboxError, match="GDPO_SANDBOX_MIN_LEVEL=uid"):
        run_program("pass", limits=FAST)
    with pytest.raises(SandboxError, match="below the required"):
        require_level("namespaces")


def test_min_level_accepts_the_detected_level_and_rejects_unknown_names():
    assert require_level(CAPS.level) == CAPS
    assert run_program("print(1)", limits=FAST, min_level=CAPS.level).stdout == "1\n"
    with pytest.raises(ValueError, match="min_level"):
        run_program("pass", limits=FAST, min_level="strong")


def test_code_rewards_refuse_a_weak_level_by_default(monkeypatch):
    if not CAPS.is_root:
        pytest.skip("level 'uid' needs root")
    from gdpo.rewards import code

    assert code.CodeSettings().min_level == "namespaces"
    monkeypatch.setenv("GDPO_SANDBOX_LEVEL", "uid")
    tests = json.dumps([{"input": "", "output": "1\n"}])
    with pytest.raises(SandboxError, match="min_level"):
        code.code_pass_rate(["```python\nprint(1)  # not cached yet\n```"], tests=[tests])
