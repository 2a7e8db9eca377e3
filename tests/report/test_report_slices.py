"""Which results.csv rows the report's figures use when a study sweeps more than weight decay and seed."""

from __future__ import annotations

from plasticity.report import slices

FIELDS = ["optim.weight_decay", "finetune_from", "finetune.optim.lr", "run", "t/pass@4"]


def row(wd, frac, lr, run, score):
    return {"optim.weight_decay": wd, "finetune_from": frac, "finetune.optim.lr": lr, "run": run, "t/pass@4": score}


ROWS = [row("0.1", "0.5", "1e-4", "a", "0.9"), row("0.1", "1.0", "1e-4", "a", "0.2"),
        row("0.1", "1.0", "3e-4", "a", "0.4"), row("1.0", "1.0", "1e-4", "b", "0.5"),
        row("1.0", "1.0", "3e-4", "b", "0.3"), row("1.0", "0.5", "3e-4", "b", "0.1")]


def test_pretraining_figures_use_one_row_per_run():
    assert [r["run"] for r in slices.per_run(ROWS)] == ["a", "b"]


def test_downstream_rows_are_from_the_end_of_pretraining_and_the_best_ft_setting():
    rows, note = slices.downstream(ROWS, FIELDS, "t/pass@4")
    assert [(r["run"], r["t/pass@4"]) for r in rows] == [("a", "0.4"), ("b", "0.5")]
    assert "fine-tuned from 1 of pretraining" in note and "best finetune.optim.lr" in note
    rows, note = slices.downstream(ROWS, ["optim.weight_decay", "run", "t/pass@4"], "t/pass@4")
    assert rows == ROWS and note == ""


def test_over_pretraining_needs_two_fractions():
    assert slices.over_pretraining(ROWS, FIELDS) == [0.5, 1.0]
    assert slices.over_pretraining(ROWS[1:2], FIELDS) == []
