import os
from pathlib import Path

import pytest

from adaptlab.errors import RunDirError
from adaptlab.runs import atomic_write_text, create_run_dir


def test_run_dirs_are_unique_and_never_reused(tmp_path: Path):
    a = create_run_dir(None, "exp", root=tmp_path)
    b = create_run_dir(None, "exp", root=tmp_path)
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    (a.path / "keep.txt").write_text("precious")
    with pytest.raises(RunDirError, match="never overwrites"):
        create_run_dir(a.path, "exp")
    assert (a.path / "keep.txt").read_text() == "precious"


def test_explicit_empty_directory_is_accepted(tmp_path: Path):
    target = tmp_path / "out"
    target.mkdir()
    assert create_run_dir(target, "exp").path == target


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_write_honours_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "r.html", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path):
    from adaptlab.runs import refuse_existing

    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunDirError, match="afile is a file, so nothing can be written below it"):
        refuse_existing(tmp_path / "afile" / "sub" / "scores.jsonl", "output file")
    assert refuse_existing(tmp_path / "new" / "scores.jsonl") == tmp_path / "new" / "scores.jsonl"


def test_a_nested_run_hands_the_log_back_to_the_outer_run(tmp_path):
    from adaptlab.runs import get_logger, open_run
    from adaptlab.tuning.settings import TrainerSettings

    with open_run(tmp_path / "outer", "outer", TrainerSettings()) as outer:
        get_logger().info("before the inner run")
        with open_run(tmp_path / "inner", "inner", TrainerSettings()) as inner:
            get_logger().info("inside the inner run")
            inner.finish({}, "inner")
        get_logger().info("after the inner run")
        outer.finish({}, "outer")
    outer_log = (tmp_path / "outer" / "log.txt").read_text()
    inner_log = (tmp_path / "inner" / "log.txt").read_text()
    assert "before the inner run" in outer_log and "after the inner run" in outer_log
    assert "inside the inner run" in inner_log and "inside the inner run" not in outer_log
