"""How plastic is a released model? Analyse a checkpoint, fine-tune it on a task, evaluate the result.

By default Pythia-160M at its final training step (GPT-NeoX, from the Hub at a pinned revision); any run dir,
HF checkpoint dir (Llama, OLMo-2, Mistral, Qwen2, Qwen3, GPT-NeoX) or Hub id works, e.g. an earlier
``--revision step8000`` to see plasticity over pretraining time (configs/study-pythia-over-training.yaml
runs that grid as a study).

    python examples/released_checkpoint.py --model EleutherAI/pythia-160m --revision step143000 --task arc_easy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import plasticity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="EleutherAI/pythia-160m")
    ap.add_argument("--revision", default="step143000", help="Hub revision (ignored for local dirs)")
    ap.add_argument("--task", default="arc_easy")
    ap.add_argument("--out", default="runs/released")
    ap.add_argument("--n-train", type=int, default=None, help="fine-tuning examples (default: the task's)")
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--cutoff", type=int, default=1024)
    args = ap.parse_args()
    local = Path(args.model).exists()
    revision = None if local else args.revision
    out = Path(args.out)

    ana = plasticity.analyze(args.model, what=["rank", "norms"], out_dir=out / "analysis", revision=revision)
    rank = ana["rank"]["checkpoints"][-1]["mean"]
    print(f"{args.model}: QK pseudo-rank {rank['qk']['fraction']:.3f}, VP {rank['vp']['fraction']:.3f}, "
          f"weight norm {ana['norms']['total_norm']:.1f}")

    ft = {"init_from": args.model, "revision": revision, "task": args.task, "out_dir": str(out / "finetune"),
          "cutoff_len": args.cutoff, "optim": {"lr": args.lr}, "train": {"epochs": args.epochs}}
    if args.n_train:
        ft["max_examples"] = args.n_train
    summary = plasticity.finetune(ft, resume=(out / "finetune" / "config.yaml").exists())
    print(f"fine-tuned on {args.task}: {summary['steps']} steps, final train loss {summary['final_train_loss']:.4f}")

    results = plasticity.evaluate(out / "finetune", max_questions=args.questions, k=1, max_new_tokens=32)
    for task, res in results.items():
        for metric, m in res["metrics"].items():
            value = "-" if m["value"] is None else f"{m['value']:.4f}"  # None: not computable (e.g. no reward model)
            print(f"{task} {metric}: {value} (n={m['n']})")


if __name__ == "__main__":
    main()
