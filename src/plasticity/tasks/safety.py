"""Safety alignment (paper Appendix C.4, data of Bianchi et al. 2024, vinid/safety-tuned-llamas).

SFT data: `n_alpaca` general instructions (paper: 20,000 sampled from Alpaca) mixed with `k` safety
instructions (paper: 300, 500, 1,000 or 2,000), each sampled with `seed`, then shuffled together. Locally
only a 999-row Alpaca sample exists (alpaca/train.jsonl), so fewer rows than asked are used (recorded in the
load notes). Evaluation: the 100 harmful prompts of I-MaliciousInstructions (option `eval_set` picks another
file of safety/eval/); generations are scored by a harmfulness reward model elsewhere, so there is no gold.
The safety data has no Hub copy; Alpaca is tatsu-lab/alpaca on the Hub (the Hub path covers only Alpaca).
"""

from __future__ import annotations

from plasticity.errors import DataError
from plasticity.tasks.base import HubSource, LocalSource, Row, SplitSpec, Task, check_int, field_value
from plasticity.tasks.registry import register

SAFETY_TRAIN = "safety/train/safety_only_data_Instructions.jsonl"
ALPACA_TRAIN = "alpaca/train.jsonl"
EVAL_SETS = (
    "I-MaliciousInstructions",
    "I-Alpaca",
    "I-CoNa",
    "I-Controversial",
    "I-PhysicalSafetySafe",
    "I-PhysicalSafetyUnsafe",
    "Q-Harm",
)


def instruction_question(row: Row) -> str:
    """Alpaca-style prompt: the instruction, then the optional input after a blank line."""
    instruction = str(field_value(row, "instruction")).strip()
    extra = str(row.get("input") or "").strip()
    return f"{instruction}\n\n{extra}" if extra else instruction


@register("safety")
def safety(
    k: int = 1000, n_alpaca: int = 20000, seed: int = 0, eval_set: str = "I-MaliciousInstructions"
) -> Task:
    k, n_alpaca, seed = check_int("k", k), check_int("n_alpaca", n_alpaca), check_int("seed", seed)
    if eval_set not in EVAL_SETS:
        raise DataError(f"option eval_set must be one of {', '.join(EVAL_SETS)}, got {eval_set!r}")
    fields = ("instruction", "output")
    parts = []
    if n_alpaca:
        parts.append(LocalSource(ALPACA_TRAIN, fields, sample=n_alpaca, sample_seed=seed))
    if k:
        parts.append(LocalSource(SAFETY_TRAIN, fields, sample=k, sample_seed=seed + 1))
    if not parts:
        raise DataError("task safety: k and n_alpaca are both 0, so there is no training data")
    return Task(
        name="safety",
        family="safety",
        answer_type="free",
        splits={
            "train": SplitSpec(
                local=tuple(parts),
                hub=HubSource("tatsu-lab/alpaca", None, "train", fields),
                shuffle_seed=seed,
                note=f"Alpaca ({n_alpaca} asked) + {k} safety instructions, shuffled with seed {seed}. "
                "source='hub' loads Alpaca only (the safety set has no Hub copy).",
            ),
            "eval": SplitSpec(local=(LocalSource(f"safety/eval/{eval_set}.jsonl", ("instruction",)),)),
        },
        question_fn=instruction_question,
        response_fn=lambda row: str(field_value(row, "output")).strip(),
        description="Instruction tuning with k safety demonstrations; harmfulness scored by a reward model.",
        paper="train 20,000 Alpaca + 300/500/1,000/2,000 safety; test 100 I-MaliciousInstructions",
    )
