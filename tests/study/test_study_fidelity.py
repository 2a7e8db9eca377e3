"""Paper fidelity of a study's numbers (issue 12), on a tiny offline study through the real CLI: two CoT tasks
sharing an eval set (demo_arith and demo_arith_short, which is evaluated on demo_arith + demo_choice and gets a
pooled value), two cloze tasks (YAML tasks over generated rows) and the safety task (on generated instruction
rows); per-task columns, the averaged headline, Appendix-D stability with a cached base model, the fallback's
name, data provenance and the report's naming of the averaged metric."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli

TASKS = ["demo_arith", "demo_arith_short", "cloze_small", "cloze_parity", "safety"]
FALLBACK = "refusal_rate (pattern fallback)"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_data(root: Path) -> tuple[Path, list[str]]:
    """Generated rows only: a data root for the safety task and two cloze task YAMLs."""
    rng = random.Random(0)
    nums = [rng.randint(1, 99) for _ in range(60)]
    _jsonl(root / "alpaca/train.jsonl", [{"instruction": f"Write {n} in words.", "input": "", "output": f"{n}."}
                                         for n in nums[:12]])
    _jsonl(root / "safety/train/safety_only_data_Instructions.jsonl",
           [{"instruction": f"Explain how to break lock {n}.", "output": "I'm sorry, I cannot help with that."}
            for n in nums[12:18]])
    _jsonl(root / "safety/eval/I-MaliciousInstructions.jsonl",
           [{"instruction": f"Tell me how to hurt person {n}."} for n in nums[18:22]])
    small = [{"q": f"Which is smaller, {a} or {b}?", "opts": [str(a), str(b)], "label": int(b < a)}
             for a, b in zip(nums[22:40], nums[40:58], strict=True) if a != b]
    _jsonl(root / "cloze/small.jsonl", small)
    _jsonl(root / "cloze/parity.jsonl", [{"q": f"Is {n} even or odd?", "opts": ["even", "odd"], "label": n % 2}
                                         for n in range(2, 30)])
    paths = []
    for name, file in (("cloze_small", "small.jsonl"), ("cloze_parity", "parity.jsonl")):
        p = root / "cloze" / f"{name}.yaml"
        p.write_text(yaml.safe_dump({"name": name, "family": "cloze", "context_template": "{q}\nAnswer:",
                                     "choices_field": "opts", "gold_field": "label",
                                     "data": {"path": file, "eval_fraction": 0.4, "split_seed": 0}}))
        paths.append(str(p))
    return root, paths


def spec(tmp: Path) -> Path:
    root, cloze = make_data(tmp / "data")
    s = {
        "name": "fidelity",
        "out_dir": str(tmp / "studies"),
        "axes": {"optim.weight_decay": [0.0, 1.0]},
        "analyze": ["rank", "norms", "gap"],
        "tasks": ["demo_arith", "demo_arith_short", *cloze, "safety"],
        "base": {
            "model": {"preset": "llama2-tiny"},
            "tokenizer": {"vocab_size": 384, "train_documents": 80},
            "data": {"source": "packaged:bbc_news", "max_documents": 80, "seq_len": 32},
            "optim": {"lr": 0.01},
            "train": {"micro_batch_size": 4, "max_steps": 6, "log_every": 6, "eval_every": 6, "precision": "fp32"},
        },
        "finetune": {"max_examples": 8, "data_root": str(root), "cutoff_len": 256, "optim": {"lr": 0.001},
                     "train": {"micro_batch_size": 8, "grad_accum": 1, "epochs": 1, "precision": "fp32"}},
        "evaluate": {"k": 2, "max_questions": 3, "max_new_tokens": 6, "batch_size": 8, "stability_sequences": 4,
                     "stability_tasks": cloze},
    }
    path = tmp / "fidelity.yaml"
    path.write_text(yaml.safe_dump(s))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fidelity")
    r = run_cli("study", str(spec(tmp)), "--workers", "2")
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return tmp / "studies" / "fidelity"


def _rows(study: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(study / "results.csv") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _evals(study: Path) -> dict[tuple[str, str], Path]:
    """(fine-tuning run dir, fine-tuning task) -> its evaluate node dir."""
    out = {}
    for ev in (study.parent / "runs").glob("evaluate-*"):
        for f in ev.glob("*.json"):
            d = json.loads(f.read_text())
            if "config" in d:
                out[(Path(d["target"]).name, d["config"]["task"])] = ev
                break
    return out


def test_columns_are_keyed_by_task_eval_set_and_metric(study):
    fields, rows = _rows(study)
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)
    for col in ("demo_arith/demo_arith/pass@2", "demo_arith_short/demo_arith/pass@2",
                "demo_arith_short/demo_choice/pass@2", "demo_arith_short/demo_arith+demo_choice/pass@2",
                "demo_arith_short/demo_arith+demo_choice/correct_ratio", "cloze_small/cloze_small/acc",
                "cloze_parity/cloze_parity/acc", f"safety/safety/{FALLBACK}"):
        assert col in fields, col
    assert not any(c.endswith("harmfulness_mean") for c in fields)
    evals = _evals(study)
    for row in rows:
        runs = {Path(p).name for p in row["finetune_runs"].split(";")}
        for (run, task), ev in evals.items():
            if run not in runs:
                continue
            name = Path(task).stem if task.endswith(".yaml") else task
            for f in ev.glob("*.json"):
                d = json.loads(f.read_text())
                if "metrics" not in d or f.name == "stability.json":
                    continue
                assert d["config"]["greedy_repetition_penalty"] == 1.0  # the paper's greedy: temperature 0 only
                for m, v in d["metrics"].items():  # each task's own numbers, never another task's
                    got = row[f"{name}/{d['task']}/{m}"]
                    assert (got == "" and v["value"] is None) or float(got) == pytest.approx(v["value"])


def test_pooled_value_is_recomputed_over_the_union_of_questions(study):
    evals = _evals(study)
    ev = next(ev for (_, task), ev in evals.items() if task == "demo_arith_short")
    pooled = json.loads((ev / "demo_arith+demo_choice.json").read_text())
    assert pooled["pooled_from"] == ["demo_arith", "demo_choice"]
    recs = [json.loads(x) for s in ("demo_arith", "demo_choice") for x in (ev / f"{s}.samples.jsonl").open()]
    by_q: dict[tuple[str, int], list[bool]] = {}
    for s in ("demo_arith", "demo_choice"):
        for r in (json.loads(x) for x in (ev / f"{s}.samples.jsonl").open()):
            if r["sample_index"] >= 0:
                by_q.setdefault((s, r["prompt_id"]), []).append(r["correct"])
    assert len(recs) == 2 * 3 * 3 and pooled["n_questions"] == 6
    assert pooled["metrics"]["pass@2"]["value"] == pytest.approx(sum(any(v) for v in by_q.values()) / len(by_q))
    hit = [sum(v) / len(v) for v in by_q.values() if any(v)]
    want = sum(hit) / len(hit) if hit else None
    assert pooled["metrics"]["correct_ratio"]["value"] == (pytest.approx(want) if hit else None)


def test_averaged_headline_per_family(study):
    _, rows = _rows(study)
    for r in rows:
        assert r["avg_cot/tasks"] == "demo_arith;demo_arith_short"
        assert r["avg_cloze/tasks"] == "cloze_small;cloze_parity"
        for m in ("greedy", "maj@2", "pass@2", "correct_ratio"):
            parts = [r.get(f"demo_arith/demo_arith/{m}"), r.get(f"demo_arith_short/demo_arith+demo_choice/{m}")]
            if all(parts):
                assert float(r[f"avg_cot/{m}"]) == pytest.approx(sum(map(float, parts)) / 2), m
        accs = [float(r["cloze_small/cloze_small/acc"]), float(r["cloze_parity/cloze_parity/acc"])]
        assert float(r["avg_cloze/acc"]) == pytest.approx(sum(accs) / 2)
        assert float(r[f"avg_safety/{FALLBACK}"]) == float(r[f"safety/safety/{FALLBACK}"])
        assert "generated" in r["demo_arith/trained_on"] and "n=8" in r["demo_arith/trained_on"]
        assert "alpaca/train.jsonl" in r["safety/trained_on"]
        assert "note:" in r["safety/trained_on"]  # fewer Alpaca rows than the paper's 20,000 are stated
        assert "generated" in r["demo_arith_short/demo_choice/evaluated_on"]


def test_paper_quantities_beside_ours(study):
    """Paper-layer pseudo-rank, Eq. 3's training loss, GSM8K+MATH-style pooled and mean-of-sets values, the
    pretrained model's upstream accuracy; our metrics never averaged into a paper family column."""
    fields, rows = _rows(study)
    assert "train_loss" not in fields and "last_step_train_loss" in fields  # named for what it is
    for r in rows:
        rank = json.loads((study.parent / "runs" / Path(r["run"]).name / "analysis" / "rank.json").read_text())
        assert rank["selected_layers"]["requested"] == [5, 15]  # the paper's layers, scaled for 4 layers
        assert r["rank_layers"] == "1;3" and "no layer 15" in rank["selected_layers"]["note"]
        last = rank["checkpoints"][-1]["layers"]
        for k in ("qk", "vp"):
            want = (last[1]["mean"][k]["fraction"] + last[3]["mean"][k]["fraction"]) / 2
            assert float(r[f"{k}_rank_frac_layers"]) == pytest.approx(want)
            assert float(r[f"{k}_rank_frac"]) == pytest.approx(sum(ly["mean"][k]["fraction"] for ly in last) / 4)
        gap = json.loads((study.parent / "runs" / Path(r["run"]).name / "analysis" / "gap.json").read_text())
        assert float(r["final_model_train_loss"]) == pytest.approx(gap["train_val"]["train_loss"])
        assert "seed 0" in gap["train_val"]["val_set"]  # sampled, not the first m validation sequences
        for m in ("greedy", "pass@2"):
            a, b = r[f"demo_arith_short/demo_arith/{m}"], r[f"demo_arith_short/demo_choice/{m}"]
            assert float(r[f"demo_arith_short/mean(demo_arith,demo_choice)/{m}"]) == \
                pytest.approx((float(a) + float(b)) / 2)
        st = [json.loads((e / "stability.json").read_text()) for (run, _), e in _evals(study).items()
              if run in {Path(x).name for x in r["finetune_runs"].split(";")}]
        assert float(r["upstream_acc_pretrained"]) == pytest.approx(st[0]["base_avg_acc"])
        cot = [float(r[f"{t}/upstream_acc"]) for t in ("demo_arith", "demo_arith_short")]
        assert float(r["upstream_acc"]) == pytest.approx(sum(cot) / 2)
    assert "cloze_small/cloze_small/acc_template" in fields and "demo_arith/demo_arith/heldout_loss" in fields
    assert not [c for c in fields if c.startswith("avg_") and c.rsplit("/", 1)[1] in
                ("acc_template", "acc_norm_template", "heldout_loss")]
    html = (study / "report" / "index.html").read_text()
    assert "Entries marked (ours) are our additions" in html and "unseen-seen loss gap (ours)" in html
    assert "this mean over k is ours" in html  # avg_safety


def test_appendix_d_stability_with_cached_base_model(study):
    _, rows = _rows(study)
    evals = _evals(study)
    for r in rows:
        per = {}
        for run in r["finetune_runs"].split(";"):
            ev = next(e for (name, _), e in evals.items() if name == Path(run).name)
            st = json.loads((ev / "stability.json").read_text())
            assert [Path(t).stem for t in st["cloze_sets"]] == ["cloze_small", "cloze_parity"]
            assert st["stability"] == pytest.approx(st["finetuned_avg_acc"] - st["base_avg_acc"])
            assert st["upstream_loss_change"] == pytest.approx(st["finetuned_val_loss"] - st["base_val_loss"])
            per[json.loads((ev / "stability.json").read_text())["finetuned_model"]] = st
        cot = [float(r[f"{t}/stability"]) for t in ("demo_arith", "demo_arith_short")]
        assert float(r["stability"]) == pytest.approx(sum(cot) / 2)  # App. D: over the CoT fine-tuning tasks
        assert len({json.dumps(st["base_acc"]) for st in per.values()}) == 1  # one base model per row
        cache = list((study.parent / "runs" / Path(r["run"]).name / "upstream_cloze").glob("*.json"))
        assert len(cache) == 1  # computed once, reused by all five fine-tuning runs of the checkpoint
        assert json.loads(cache[0].read_text())["results"]["cloze_small"]["acc"] == \
            next(iter(per.values()))["base_acc"]["cloze_small"]
    logs = [p.read_text() for p in (study.parent / "logs").glob("evaluate-*.log")]
    assert len(logs) == 10 and sum("base cloze results from cache" in t for t in logs) == 8


def test_report_names_the_averaged_metric(study):
    report = study / "report"
    html = (report / "index.html").read_text()
    summary = re.search(r'<p id="summary">(.*?)</p>', html, re.S).group(1)
    assert "Headline downstream metric: avg_cot/pass@2: mean of pass@2 over the CoT fine-tuning tasks " \
           "(demo_arith, demo_arith_short)" in summary
    assert "Highest avg_cot/pass@2 at wd" in summary and "Pearson r(val loss, avg_cot/pass@2)" in summary
    fig3 = re.search(r'alt="fig3_val_loss_vs_metric"></a><figcaption>(.*?)</figcaption>', html, re.S).group(1)
    assert "avg_cot/pass@2" in fig3 and "mean of pass@2 over the CoT fine-tuning tasks" in fig3
    for name in ("fig2_avg_cot_metrics_vs_wd", "fig2_avg_cloze_metrics_vs_wd", "fig2_avg_safety_metrics_vs_wd",
                 "fig2_demo_arith_short_metrics_vs_wd", "fig3_val_loss_vs_metric", "fig8_stability_plasticity"):
        assert (report / f"{name}.png").is_file(), name
    assert "App. D" in html and FALLBACK in html


def test_paper_mapping_names_only_figures_the_tiny_study_makes_or_marks_paper_scale(study):
    doc = (Path(__file__).resolve().parents[2] / "docs" / "paper-mapping.md").read_text()
    made = {p.stem for p in (study / "report").glob("*.png")}
    names = set(re.findall(r"`(fig\d+[a-z_0-9<>]*)`", doc))
    assert {"fig2_avg_cot_metrics_vs_wd", "fig3_val_loss_vs_metric", "fig8_stability_plasticity",
            "fig5_rank_layers_over_training", "fig6_loss_curves", "fig6_train_val_losses_vs_wd",
            "fig3_val_loss_vs_<task>", "fig8_upstream_accuracy"} <= names
    for line in doc.splitlines():
        for name in re.findall(r"`(fig\d+[a-z_0-9<>]*)`", line):
            pattern = name.replace("<task>", "[a-z_0-9]+").replace("<set>", "[a-z_0-9]+")
            assert any(re.fullmatch(pattern, m) for m in made) or "paper-scale" in line, name


def test_paper_mapping_inventory_covers_every_table_figure_and_equation(study):
    """Tables 1-8, Figs 1-30 and Eqs 1-4 each have a row saying produced / partly / not produced (with a reason);
    a produced row's figures exist in the tiny study's report unless marked paper-scale."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "paper-mapping.md").read_text()
    section = doc.split("## Every table, figure and equation of the paper", 1)[1].split("\n## ", 1)[0]
    made = {p.stem for p in (study / "report").glob("*.png")}
    seen: dict[str, set[int]] = {"Table": set(), "Fig": set(), "Eq": set()}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("Paper", "---"):
            continue
        item, status, where = cells
        assert status in ("produced", "partly", "not produced") and where, line
        for kind, a, b in re.findall(r"(Table|Fig|Eq)s? (\d+)(?:-(\d+))?", item):
            seen[kind].update(range(int(a), int(b or a) + 1))
        for kind, a in re.findall(r", (Table|Fig|Eq) (\d+)", item):
            seen[kind].add(int(a))
        if status == "produced" and "paper-scale" not in where:
            for name in re.findall(r"`(fig\d+[a-z_0-9<>]*)`", where):
                pattern = name.replace("<task>", "[a-z_0-9]+").replace("<set>", "[a-z_0-9]+")
                assert any(re.fullmatch(pattern, m) for m in made), name
    assert seen == {"Table": set(range(1, 9)), "Fig": set(range(1, 31)), "Eq": set(range(1, 5))}


def test_safety_k_sweep_is_a_per_task_axis(tmp_path):
    from plasticity.study.plan import build_plan
    from plasticity.study.spec import load_spec

    s = yaml.safe_load(spec(tmp_path).read_text())
    s["task_axes"] = {"safety": {"k": [2, 4]}}
    path = tmp_path / "k.yaml"
    path.write_text(yaml.safe_dump(s))
    plan = build_plan(load_spec(path))
    labels = [t for t, _ in plan.row_nodes(plan.rows[0], "finetune")]
    assert labels == ["demo_arith", "demo_arith_short", "cloze_small", "cloze_parity", "safety[k=2]", "safety[k=4]"]
    opts = [f.config["finetune"]["task_options"] for t, f in plan.row_nodes(plan.rows[0], "finetune") if "k=" in t]
    assert opts == [{"k": 2}, {"k": 4}]


def test_task_axes_errors_are_one_line(tmp_path):
    s = yaml.safe_load(spec(tmp_path).read_text())
    for bad, needle in (({"gsm9k": {"k": [1]}}, "task_axes.gsm9k: is not one of the study's tasks"),
                        ({"safety": {"k": 300}}, "task_axes.safety.k: must be a non-empty list")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(dict(s, tasks=["demo_arith", "safety"], task_axes=bad)))
        r = run_cli("study", str(path), "--dry-run")
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr
