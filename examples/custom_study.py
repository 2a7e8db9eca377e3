"""A study written in Python: how does pretraining weight decay change what a small Llama can still learn?

Pretrains one model per weight decay on the packaged BBC News text, analyses each (norms, attention
pseudo-rank), fine-tunes each on an arithmetic task, evaluates it, and prints the results table as a DataFrame.
Everything is cached per node under --out: run it again and only what changed runs.

    python examples/custom_study.py --weight-decays 0 0.1 1.0 --tokens 400000      # minutes on a laptop CPU
"""

from __future__ import annotations

import argparse

import plasticity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="study_runs")
    ap.add_argument("--weight-decays", type=float, nargs="+", default=[0.0, 0.1, 1.0])
    ap.add_argument("--tokens", type=int, default=400_000, help="pretraining tokens per model")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--documents", type=int, default=None, help="cap on pretraining documents (tests: small)")
    ap.add_argument("--n-train", type=int, default=512, help="fine-tuning examples")
    ap.add_argument("--questions", type=int, default=48, help="evaluation questions")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    study = plasticity.Study.from_dict({
        "name": "wd-from-python",
        "out_dir": args.out,
        "axes": {"optim.weight_decay": args.weight_decays},
        "base": {
            "model": {"preset": "llama2-tiny"},
            "tokenizer": {"vocab_size": 512, "train_documents": args.documents or 2000},
            "data": {"source": "packaged:bbc_news", "seq_len": args.seq_len, "max_documents": args.documents},
            "optim": {"lr": 0.003, "min_lr": 0.0003},
            "train": {"micro_batch_size": 8, "max_tokens": args.tokens, "log_every": 5,
                      "eval_sequences": 8, "eval_max_sequences": 16},
        },
        "analyze": ["norms", "rank"],
        "finetune": {"task": "demo_arith", "task_options": {"n_train": args.n_train, "n_test": args.questions},
                     "cutoff_len": 256, "optim": {"lr": 0.001},
                     "train": {"micro_batch_size": 8, "grad_accum": 2, "epochs": 1}},
        "evaluate": {"k": 2, "max_questions": args.questions, "max_new_tokens": 16, "batch_size": 16,
                     "stability_sequences": 8, "stability_tasks": ["demo_choice"],
                     "stability_max_questions": args.questions},
    })
    todo = [n for n in study.plan() if n["state"] != "done"]
    print(f"{study.name}: {len(todo)} nodes to run")
    run = study.run(workers=args.workers, report=False, log=print)
    df = run.results()
    cols = ["optim.weight_decay", "status", "val_loss", "weight_norm", "qk_rank_frac", "demo_arith/demo_arith/pass@2"]
    print(df[cols].sort_values("optim.weight_decay").to_string(index=False))
    if not run.ok:
        raise SystemExit(f"{len(run.failed)} nodes did not finish: {sorted(run.failed)}")


if __name__ == "__main__":
    main()
