"""The embedded default study: what `plasticity study` runs with no argument (offline, CPU, minutes)."""

from __future__ import annotations

from .spec import StudySpec

# Three weight decays on a tiny Llama over packaged BBC News text. The token budget is far below 20 TPP (a
# 0.7M-parameter model at 20 TPP is 14M tokens, ~35 min per run on one AVX2 core), so the default finishes in
# minutes; at this scale the mechanistic effects of weight decay are visible, downstream differences are noise.
DEFAULT_STUDY = StudySpec(
    name="default",
    base={
        "model": {"preset": "llama2-tiny"},
        "tokenizer": {"vocab_size": 2048, "train_documents": 2000},
        "data": {"source": "packaged:bbc_news", "seq_len": 128},
        "optim": {"lr": 0.003, "min_lr": 0.0003},
        "train": {"micro_batch_size": 16, "max_tokens": 400_000, "log_every": 25, "eval_every": 50,
                  "checkpoint_fractions": [0.25, 0.5, 0.75], "checkpoint_every": 50},
    },
    axes={"optim.weight_decay": [0.0, 0.1, 1.0]},
    analyze=["probes", "rank", "gap", "norms"],
    finetune={"task": "demo_arith", "task_options": {"n_train": 512, "n_test": 64}, "cutoff_len": 256,
              "optim": {"lr": 0.001}, "train": {"micro_batch_size": 16, "grad_accum": 2, "epochs": 2}},
    evaluate={"k": 4, "max_questions": 48, "max_new_tokens": 96, "batch_size": 32,
              "stability_tasks": ["demo_choice"]},  # App. D stability on offline cloze items
)
