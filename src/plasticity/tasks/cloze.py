"""Cloze (log-likelihood) tasks (paper Table 8), prompt formats as in lm-evaluation-harness.

* hellaswag: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())`` -> `` " " + ending``.
* winogrande: partial scoring -- contexts ``sentence[:blank] + option``, one shared continuation
  ``" " + sentence[blank+1:].strip()``.
* piqa: ``Question: {goal}\\nAnswer:`` -> ``" " + sol``.
* arc_easy / arc_challenge: ``Question: {question}\\nAnswer:`` -> ``" " + choice``.

SFT (the paper fine-tunes on each benchmark's Hub train split) uses exactly the pair the evaluation scores
for the gold choice: question = ``contexts[gold]``, response = ``continuations[gold]`` without its leading
space. Locally only evaluation splits exist, so each local file is split deterministically (seeded hash of a
content key, option ``eval_fraction``, default 0.5, and ``split_seed``) into a train part and a disjoint
held-out eval part; ``source='hub'`` uses the real Hub train and evaluation splits instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from plasticity.tasks.base import (
    ClozeItem,
    HubSource,
    LocalSource,
    Partition,
    Row,
    SplitSpec,
    Task,
    check_fraction,
    check_int,
    field_value,
)
from plasticity.tasks.registry import register

PARTITION_NOTE = (
    "Local file is an evaluation split: its train part of a seeded split by {key} is used for SFT "
    "(the paper uses the Hub train split, source='hub')."
)


def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness HellaSwag cleaning: WikiHow ``[title]`` markers and bracket artifacts."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(row: Row) -> ClozeItem:
    ctx = f"{field_value(row, 'ctx_a')} {str(field_value(row, 'ctx_b')).capitalize()}"
    query = hellaswag_preprocess(f"{field_value(row, 'activity_label')}: {ctx}")
    endings = [hellaswag_preprocess(str(e)) for e in field_value(row, "endings")]
    return ClozeItem([query] * len(endings), [" " + e for e in endings], int(field_value(row, "label")))


def winogrande_partial(sentence: str, option1: str, option2: str, answer: int | str) -> ClozeItem:
    """lm-eval's Winogrande partial scoring: contexts are the sentence up to '_' with each option filled in;
    the continuation is " " + the stripped rest of the sentence after '_'. `answer` is 1/2 or "1"/"2"."""
    blank = sentence.index("_")
    target = " " + sentence[blank + 1 :].strip()
    answer = str(answer).strip()
    if answer not in ("1", "2"):
        raise ValueError(f"winogrande answer must be '1' or '2', got {answer!r}")
    return ClozeItem([sentence[:blank] + opt for opt in (option1, option2)], [target, target], int(answer) - 1)


def winogrande_item(row: Row) -> ClozeItem:
    return winogrande_partial(str(field_value(row, "sentence")), str(field_value(row, "option1")),
                              str(field_value(row, "option2")), field_value(row, "answer"))


def piqa_item(row: Row) -> ClozeItem:
    context = f"Question: {field_value(row, 'goal')}\nAnswer:"
    sols = [str(field_value(row, "sol1")), str(field_value(row, "sol2"))]
    return ClozeItem([context, context], [" " + s for s in sols], int(field_value(row, "label")))


def arc_item(row: Row) -> ClozeItem:
    context = f"Question: {field_value(row, 'question')}\nAnswer:"
    choices = field_value(row, "choices")
    texts, labels = list(choices["text"]), list(choices["label"])
    gold = labels.index(str(field_value(row, "answerKey")).strip())
    return ClozeItem([context] * len(texts), [" " + str(t) for t in texts], gold)


def _cloze_task(
    name: str,
    item: Callable[[Row], ClozeItem],
    *,
    local_path: str,
    fields: tuple[str, ...],
    key: Callable[[Row], str],
    key_name: str,
    hub: tuple[str, str | None, str, str],
    eval_fraction: float,
    split_seed: int,
    description: str,
    paper: str,
) -> Task:
    frac, seed = check_fraction("eval_fraction", eval_fraction), check_int("split_seed", split_seed)
    hub_path, hub_config, hub_train, hub_eval = hub

    def spec(part: str, hub_split: str, note: str) -> SplitSpec:
        return SplitSpec(
            local=(LocalSource(local_path, fields, Partition(part, key, frac, seed, key_name)),),
            hub=HubSource(hub_path, hub_config, hub_split, fields),
            note=note,
        )

    def question(row: Row) -> str:
        it = item(row)
        return it.contexts[it.gold]

    def response(row: Row) -> str:
        it = item(row)
        return it.continuations[it.gold].lstrip(" ")

    return Task(
        name=name,
        family="cloze",
        answer_type="cloze",
        splits={
            "train": spec("train", hub_train, PARTITION_NOTE.format(key=key_name)),
            "eval": spec("eval", hub_eval, "Local: the held-out part of the same seeded split (disjoint)."),
        },
        question_fn=question,
        response_fn=response,
        cloze_fn=item,
        description=description,
        paper=paper,
    )


@register("hellaswag")
def hellaswag(eval_fraction: float = 0.5, split_seed: int = 0) -> Task:
    return _cloze_task(
        "hellaswag",
        hellaswag_item,
        local_path="hellaswag/validation_subset.jsonl",
        fields=("activity_label", "ctx_a", "ctx_b", "endings", "label"),
        key=lambda row: str(row.get("source_id") or row["ctx"]),
        key_name="source video/article (source_id)",
        hub=("Rowan/hellaswag", None, "train", "validation"),
        eval_fraction=eval_fraction,
        split_seed=split_seed,
        description="Commonsense sentence completion, 4 endings (local: a 1000-row validation subset).",
        paper="train n=39,905; test n=10,042",
    )


@register("winogrande")
def winogrande(eval_fraction: float = 0.5, split_seed: int = 0) -> Task:
    return _cloze_task(
        "winogrande",
        winogrande_item,
        local_path="winogrande/validation.jsonl",
        fields=("sentence", "option1", "option2", "answer"),
        key=lambda row: f"{row['option1']} | {row['option2']}",
        key_name="option pair (twin sentences stay together)",
        hub=("allenai/winogrande", "winogrande_xl", "train", "validation"),
        eval_fraction=eval_fraction,
        split_seed=split_seed,
        description="Pronoun resolution with two options, partial scoring.",
        paper="train n=40,398; test n=1,267",
    )


@register("piqa")
def piqa(eval_fraction: float = 0.5, split_seed: int = 0) -> Task:
    return _cloze_task(
        "piqa",
        piqa_item,
        local_path="piqa/validation.jsonl",
        fields=("goal", "sol1", "sol2", "label"),
        key=lambda row: row["goal"],
        key_name="goal",
        hub=("ybisk/piqa", None, "train", "validation"),
        eval_fraction=eval_fraction,
        split_seed=split_seed,
        description="Physical commonsense: pick the better of two solutions.",
        paper="train n=16,113; test n=1,838",
    )


def _arc(name: str, config: str, paper: str, eval_fraction: float, split_seed: int) -> Task:
    return _cloze_task(
        name,
        arc_item,
        local_path=f"ai2_arc/{config}/test.jsonl",
        fields=("question", "choices", "answerKey"),
        key=lambda row: row["question"],
        key_name="question",
        hub=("allenai/ai2_arc", config, "train", "test"),
        eval_fraction=eval_fraction,
        split_seed=split_seed,
        description=f"AI2 Reasoning Challenge ({config}), grade-school science multiple choice.",
        paper=paper,
    )


@register("arc_easy")
def arc_easy(eval_fraction: float = 0.5, split_seed: int = 0) -> Task:
    return _arc("arc_easy", "ARC-Easy", "train n=2,251; test n=2,376", eval_fraction, split_seed)


@register("arc_challenge")
def arc_challenge(eval_fraction: float = 0.5, split_seed: int = 0) -> Task:
    return _arc("arc_challenge", "ARC-Challenge", "train n=1,119; test n=1,172", eval_fraction, split_seed)


SST2_LABELS = ("negative", "positive")


def sst2_item(row: Row) -> ClozeItem:
    """lm-evaluation-harness ``sst2``: ``{sentence}\\nQuestion: Is this sentence positive or negative?\\nAnswer:``
    -> `` negative`` / `` positive``."""
    label = int(field_value(row, "label"))
    if label not in (0, 1):
        raise ValueError(f"sst2 label must be 0 or 1, got {label}")
    context = f"{str(field_value(row, 'sentence')).strip()}\nQuestion: Is this sentence positive or negative?\nAnswer:"
    return ClozeItem([context, context], [" " + lab for lab in SST2_LABELS], label)


@register("sst2")
def sst2(n_train: int | None = None, sample_seed: int = 0) -> Task:
    """Binary sentiment (SST-2 / GLUE) as a cloze task; SFT on the train split (``n_train``: a seeded sample),
    evaluation on the validation split (872 sentences)."""
    if n_train is not None:
        n_train = check_int("n_train", n_train, 1)
    sample_seed = check_int("sample_seed", sample_seed)
    fields = ("sentence", "label")

    def response(row: Row) -> str:
        return SST2_LABELS[sst2_item(row).gold]

    return Task(
        name="sst2",
        family="cloze",
        answer_type="cloze",
        splits={
            "train": SplitSpec(
                local=(LocalSource("sst2/train.jsonl", fields, sample=n_train, sample_seed=sample_seed),),
                hub=HubSource("stanfordnlp/sst2", None, "train", fields),
            ),
            "eval": SplitSpec(local=(LocalSource("sst2/validation.jsonl", fields),),
                              hub=HubSource("stanfordnlp/sst2", None, "validation", fields)),
        },
        question_fn=lambda row: sst2_item(row).contexts[0],
        response_fn=response,
        cloze_fn=sst2_item,
        description="Movie-review sentiment (SST-2), two-way cloze as in lm-evaluation-harness (local train file: "
        "a 20k sample of the Hub train split).",
        paper="not in the paper's fine-tuning tasks (its probes use SST-2 sentiment)",
    )
