"""``adaptlab synth generate`` stopped by SIGTERM after the teacher answered: no run directory is left, and the
rerun takes every answer from the teacher cache."""

from __future__ import annotations

import signal

from test_synth_cli import stub, write_config  # noqa: F401  (stub is a fixture)

from pause_driver import stopped_at


def test_sigterm_after_the_answers_keeps_them_in_the_cache_only(stub, tmp_path, run_cli):  # noqa: F811
    config = write_config(tmp_path, stub.base_url)
    args = ["synth", "generate", config, "--output", tmp_path / "run"]
    code, err = stopped_at("adaptlab.synth.generate:filter_records", args, tmp_path, signal.SIGTERM)
    assert code == 143, err
    message = " ".join(err.split())
    assert "interrupted (SIGTERM)" in message and "answers received so far stay in the teacher cache" in message
    assert not (tmp_path / "run").exists()
    sent = stub.stats.received
    assert sent > 0
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert stub.stats.received == sent and (tmp_path / "run" / "records.jsonl").is_file()
