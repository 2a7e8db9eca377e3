"""`plasticity status` says where a running or interrupted training node stands (step, share, time left),
read from the run's own run_info.json and metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from plasticity.study.run_study import training_progress


def _run(tmp_path: Path, lines: list[str], total: int = 2413) -> Path:
    run = tmp_path / "pretrain-x"
    run.mkdir()
    (run / "run_info.json").write_text(json.dumps({"total_steps": total, "tokens_per_step": 8192}))
    (run / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return run


def _log(step: int, tok_per_s: float) -> str:
    return json.dumps({"step": step, "tokens": step * 8192, "loss": 3.2, "tok_per_s": tok_per_s})


def test_running_node_shows_step_share_and_time_left(tmp_path: Path) -> None:
    run = _run(tmp_path, [_log(1750, 4000.0), _log(1800, 4096.0),
                          json.dumps({"step": 1800, "tokens": 1800 * 8192, "val_loss": 3.29})])
    # 613 steps x 8192 tokens / 4096 tok/s = 1226 s = ~20 min (the last logged speed; validation lines skipped)
    assert training_progress(run, running=True) == "step 1,800/2,413 (75%), ~20 min left"
    assert training_progress(run, running=False) == "stopped at step 1,800/2,413 (75%)"


def test_partial_last_line_and_long_logs(tmp_path: Path) -> None:
    lines = [_log(s, 5000.0) for s in range(50, 2001, 50)] * 20  # > 8 KiB: only the tail is read
    run = _run(tmp_path, lines)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2050, "tok')  # being written
    assert training_progress(run, running=True).startswith("step 2,000/2,413 (83%), ~")


def test_nothing_to_say_before_the_first_step_or_without_run_info(tmp_path: Path) -> None:
    assert training_progress(_run(tmp_path, []), running=True) is None
    assert training_progress(tmp_path / "missing", running=True) is None


def test_study_log_durations_read_as_a_person_reads_them() -> None:
    from plasticity.study.scheduler import duration

    assert [duration(s) for s in (0.4, 42, 89.4, 90, 1025, 3599, 3600, 16046)] == [
        "0s", "42s", "89s", "1m30s", "17m05s", "59m59s", "1h00m", "4h27m"]


def test_results_csv_is_refreshed_while_the_study_runs_at_most_every_interval() -> None:
    from plasticity.study.run_study import ResultsRefresh

    now, writes, logs = [100.0], [], []
    refresh = ResultsRefresh(lambda: writes.append(now[0]), logs.append, interval=30.0, clock=lambda: now[0])
    for t in (100.0, 110.0, 129.9, 130.0, 131.0, 200.0):
        now[0] = t
        refresh()
    assert writes == [100.0, 130.0, 200.0]  # the first finished node at once, then at most every 30 s

    def broken() -> None:
        raise OSError("results.csv.tmp: no space left")

    bad = ResultsRefresh(broken, logs.append, interval=0.0)
    bad()
    bad()  # never raises into the study; says so once
    assert len(logs) == 1 and "not refreshed mid-study" in logs[0] and "written at the end" in logs[0]
