"""gdpo.train.progress: a bar only on a terminal, plain lines when stdout or stderr is redirected."""

from __future__ import annotations

import io

import pytest

from gdpo.train import progress as P


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


METRICS = {"rewards/total/mean": 1.5, "rewards/toy_short/mean": 0.25, "time/step_s": 0.5}


@pytest.mark.parametrize("stdout_tty, stderr_tty", [(False, True), (True, False), (False, False)])
def test_auto_prints_plain_lines_unless_both_streams_are_terminals(monkeypatch, stdout_tty, stderr_tty):
    out, err = (Terminal() if stdout_tty else io.StringIO()), (Terminal() if stderr_tty else io.StringIO())
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    bar = P.Progress(total=4, start=0, mode="auto")
    assert bar.bar is None
    for step in range(1, 5):
        bar.update(step, METRICS)
    bar.close()
    lines = out.getvalue().splitlines()
    # total 4 -> every max(1, 4 // 50) = 1 step: one line per step, no carriage returns anywhere
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert "reward=1.500 toy_short=0.25" in lines[0] and "s/step=0.50" in lines[0]
    assert "\r" not in out.getvalue() + err.getvalue()


def test_auto_uses_the_bar_on_a_terminal(monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setattr("sys.stdout", Terminal())
    monkeypatch.setattr("sys.stderr", Terminal())
    bar = P.Progress(total=4, start=0, mode="auto")
    try:
        assert bar.bar is not None
    finally:
        bar.close()
    assert P.on_terminal(Terminal(), Terminal()) and not P.on_terminal(Terminal(), io.StringIO())


def test_lines_mode_and_disabled(monkeypatch, capsys):
    monkeypatch.setattr("sys.stderr", Terminal())
    quiet = P.Progress(total=2, start=0, mode="auto", enabled=False)
    quiet.update(1, METRICS)
    lines = P.Progress(total=100, start=0, mode="lines")
    for step in range(1, 101):
        lines.update(step, METRICS)
    printed = capsys.readouterr().out.splitlines()
    # disabled: nothing; lines with 100 steps: every 100 // 50 = 2 steps -> 50 lines, the last at 100
    assert len(printed) == 50 and printed[-1].startswith("step 100/100")
