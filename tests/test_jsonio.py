"""The one atomic writer: a reader never sees half a file, a failed write leaves the old one."""

import os

import pytest

from gdpo.jsonio import atomic_path, read_jsonl, write_text_atomic


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    write_text_atomic(target, "a: 1\n")
    write_text_atomic(target, "a: 2\n")
    assert target.read_text() == "a: 2\n"
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]


def test_the_temporary_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "curves.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and str(os.getpid()) in tmp.name
        tmp.write_bytes(b"\x89PNG")
    assert (tmp_path / "curves.png").read_bytes() == b"\x89PNG"


def test_read_jsonl_stops_at_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert read_jsonl(tmp_path / "absent.jsonl") == []
