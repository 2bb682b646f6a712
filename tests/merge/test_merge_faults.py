"""``adaptlab merge`` stopped by real signals: nothing at the output, no partial files left, the rerun works."""

from __future__ import annotations

import signal

from pause_driver import stopped_at

WHERE = "adaptlab.merge.files:write_side_files"  # every tensor is written to the partial directory


def chat_vector_args(family, output) -> list:
    return ["merge", "chat-vector", "--base", family["base"], "--instruct", family["instruct"], "--domain",
            family["domain"], "--output", output, "--scale", "0.5"]


def partials(folder) -> list:
    return sorted(p.name for p in folder.glob(".*.partial-*"))


def test_sigterm_during_a_merge_removes_its_partial_files(model_family, tmp_path, run_cli):
    args = chat_vector_args(model_family("llama"), tmp_path / "merged")
    code, err = stopped_at(WHERE, args, tmp_path, signal.SIGTERM)
    assert code == 143, err
    assert "interrupted (SIGTERM)" in err and "nothing is written to" in err and "Traceback" not in err
    assert not (tmp_path / "merged").exists() and partials(tmp_path) == []
    code, _, err = run_cli(*args)
    assert code == 0, err


def test_a_partial_merge_left_by_sigkill_is_cleaned_by_the_next_run(model_family, tmp_path, run_cli):
    args = chat_vector_args(model_family("llama"), tmp_path / "merged")
    code, err = stopped_at(WHERE, args, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL, err
    assert len(partials(tmp_path)) == 1 and not (tmp_path / "merged").exists()
    code, _, err = run_cli(*args)
    assert code == 0, err
    assert partials(tmp_path) == [] and (tmp_path / "merged" / "merge_report.json").is_file()
