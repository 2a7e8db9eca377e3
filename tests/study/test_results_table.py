"""The closing table of `plasticity study`: nothing is cut with an ellipsis, in a log (the table takes the
width it needs) or on a narrow terminal (headers wrap at their words, cells fold)."""

from __future__ import annotations

import io

from rich.console import Console

from plasticity.study.cli import column_header, print_results

AXES = ["train.seed", "optim.weight_decay", "finetune.optim.lr"]


def _rows() -> list[dict]:
    rows = []
    for seed in (0, 1):
        for wd in (0.0, 0.1, 0.3, 1.0, 3.0):
            rows.append({"train.seed": seed, "optim.weight_decay": wd, "finetune.optim.lr": 0.003,
                         "status": "completed", "val_loss": 3.2 + wd / 7, "weight_norm": 41.5 - wd,
                         "qk_rank_frac": 0.71, "vp_rank_frac": 0.93, "unseen_seen_gap": -0.006709,
                         "probe_sst2": 0.55, "probe_ag_news": 0.4, "probe_mean_best": 0.475,
                         "avg_cot/greedy": 0.125, "avg_cot/maj@16": 0.25, "avg_cot/pass@16": 0.5,
                         "avg_cot/tasks": "addition", "avg_cloze/acc": 0.61, "avg_cloze/acc_norm": 0.6,
                         "stability": 5.551e-17, "addition/addition/greedy": 0.125})
    return rows


def _render(**console_kw) -> str:
    buf = io.StringIO()
    print_results(Console(file=buf, highlight=False, **console_kw), "study", _rows(), AXES)
    return buf.getvalue()


def test_headers_are_short_and_wrap_at_words():
    assert column_header("optim.weight_decay") == "wd"
    assert column_header("finetune.optim.lr") == "ft lr"
    assert column_header("train.seed") == "seed"
    assert column_header("avg_cot/pass@16") == "avg cot pass@16"
    assert column_header("qk_rank_frac") == "qk rank"


def test_log_output_keeps_every_header_and_value_whole():
    text = _render(width=80)  # not a terminal: a log file or a pipe
    assert "…" not in text
    for h in ("seed", "wd", "ft lr", "val loss", "weight norm", "unseen seen gap", "probe mean best",
              "avg cot pass@16", "avg cloze acc norm", "stability", "completed", "-0.006709", "5.551e-17"):
        assert h in text, h
    assert "addition addition greedy" not in text and "avg cot tasks" not in text  # per-task columns: results.csv
    assert len(text.splitlines()) == 4 + 10 + 1  # title, top rule, ONE header line (nothing wrapped), rule, rows, rule


def test_narrow_terminal_folds_instead_of_cutting():
    text = _render(width=80, force_terminal=True, color_system=None)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
