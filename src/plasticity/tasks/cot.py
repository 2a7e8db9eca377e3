"""Chain-of-thought tasks (paper Table 7): generation, evaluated by final-answer correctness.

Local substitutes (the local data folder lacks several of the paper's training sets):

* metamathqa, simplescaling: GSM8K train (same ``#### N`` answer format) replaces MetaMathQA / s1K locally.
  Both are evaluated on gsm8k (GSM8K-Platinum on the Hub; the original GSM8K test locally) and math.
* medmcqa: only the validation split is local and it has no ``exp`` explanation field, so the local response
  is just the answer line ``The answer is X.``; the file is split (seeded, by question) into SFT/eval parts.
* pubmedqa: the paper trains on pqa_artificial (Hub); locally pqa_labeled is split into the authors' 500
  official test questions (eval) and the other 500 (SFT).
* mmlu_pro_cot: the paper's MMLUProCoT training set is not local; cais/mmlu test (choices/answer) is split
  (seeded, by question) into SFT/eval parts. On the Hub, TIGER-Lab/MMLU-Pro test is split the same way.
* race: a 1000-row subset of unknown split is local; it is split (seeded, by article) into SFT/eval parts.
"""

from __future__ import annotations

import re

from plasticity.tasks import answers
from plasticity.tasks.base import (
    HubSource,
    LocalSource,
    Membership,
    Partition,
    Row,
    SplitSpec,
    Task,
    answer_line,
    check_fraction,
    check_int,
    field_value,
    letter,
    multiple_choice,
)
from plasticity.tasks.registry import register

_CALC_RE = re.compile(r"<<[^<>]*>>")
GSM8K_LOCAL = {"train": "gsm8k/train.jsonl", "eval": "gsm8k/test.jsonl"}
GSM8K_FIELDS = ("question", "answer")


def strip_calculator(text: str) -> str:
    """Remove GSM8K ``<<48/2=24>>`` calculator annotations."""
    return _CALC_RE.sub("", text)


# --- GSM8K / MATH -----------------------------------------------------------------------------------------


def gsm8k_response(row: Row) -> str:
    return strip_calculator(str(field_value(row, "answer"))).strip()


def gsm8k_gold(row: Row) -> str:
    gold = answers.extract_answer("numeric", str(field_value(row, "answer")), fallback=False)
    if gold is None:
        raise ValueError("GSM8K answer has no '#### N' line")
    return gold


def math_response(row: Row) -> str:
    solution = row.get("solution")
    if solution:
        return str(solution)
    # train_nosolution.jsonl has only the final answer (two of its rows have an empty one)
    answer = str(field_value(row, "answer")).strip()
    if not answer:
        raise ValueError("MATH row has neither a solution nor an answer")
    return answer_line(f"$\\boxed{{{answer}}}$")


def math_gold(row: Row) -> str:
    raw = row.get("answer")
    if raw is None or str(raw).strip() == "":
        raw = answers.last_boxed(str(field_value(row, "solution")))
    gold = answers.normalize_answer(str(raw)) if raw is not None else ""
    if not gold:
        raise ValueError("MATH row has no \\boxed answer")
    return gold


@register("gsm8k")
def gsm8k() -> Task:
    return Task(
        name="gsm8k",
        family="cot",
        answer_type="numeric",
        answer_fallback=True,
        splits={
            "train": SplitSpec(
                local=(LocalSource(GSM8K_LOCAL["train"], GSM8K_FIELDS),),
                hub=HubSource("openai/gsm8k", "main", "train", GSM8K_FIELDS),
            ),
            "eval": SplitSpec(
                local=(LocalSource(GSM8K_LOCAL["eval"], GSM8K_FIELDS),),
                hub=HubSource("madrylab/gsm8k-platinum", "main", "test", GSM8K_FIELDS),
                note="Local eval is the original GSM8K test (1019 of 1319 rows; 300 are held out); "
                "the paper uses GSM8K-Platinum (1209 rows), which source='hub' loads.",
            ),
        },
        question_fn=lambda row: field_value(row, "question"),
        response_fn=gsm8k_response,
        gold_fn=gsm8k_gold,
        description="Grade-school math word problems; response = worked answer without <<calc>> annotations.",
        paper="eval set of MetaMathQA / SimpleScaling: GSM8K-Platinum n=1,209",
    )


@register("math")
def math_task() -> Task:
    return Task(
        name="math",
        family="cot",
        answer_type="math",  # LaTeX answers: math-verify equivalence (numbers keep the fast path)
        splits={
            "train": SplitSpec(
                local=(
                    LocalSource(
                        "competition_math/train_nosolution.jsonl",
                        ("problem", "answer"),
                        Membership("competition_math/test.jsonl", "problem", keep=False),
                    ),
                ),
                hub=HubSource(
                    "DigitalLearningGmbH/MATH-lighteval", "default", "train", ("problem", "solution")
                ),
                note="Local MATH train has final answers only (no worked solutions): the response is "
                "'The answer is $\\boxed{X}$.' Problems that also occur in the test file are dropped.",
            ),
            "eval": SplitSpec(
                local=(LocalSource("competition_math/test.jsonl", ("problem", "solution")),),
                hub=HubSource(
                    "DigitalLearningGmbH/MATH-lighteval", "default", "test", ("problem", "solution")
                ),
            ),
        },
        question_fn=lambda row: field_value(row, "problem"),
        response_fn=math_response,
        gold_fn=math_gold,
        description="Competition mathematics (hendrycks MATH); answers in \\boxed{...}.",
        paper="eval set of MetaMathQA / SimpleScaling: MATH test n=5,000",
    )


# --- Math CoT training sets evaluated on gsm8k + math -------------------------------------------------------


def _gsm8k_substitute(task: str) -> SplitSpec:
    return SplitSpec(
        local=(LocalSource(GSM8K_LOCAL["train"], GSM8K_FIELDS),),
        hub=None,
        note=f"{task} is not in the local data folder: GSM8K train (question/answer, '#### N') substitutes "
        "for it locally (tests use it too).",
    )


@register("metamathqa")
def metamathqa() -> Task:
    local = _gsm8k_substitute("MetaMathQA")
    train = SplitSpec(
        local=local.local,
        hub=HubSource("meta-math/MetaMathQA", None, "train", ("query", "response")),
        note=local.note,
    )
    return Task(
        name="metamathqa",
        family="cot",
        answer_type="numeric",
        splits={"train": train},
        eval_tasks=("gsm8k", "math"),
        question_fn=lambda row: row["query"] if "query" in row else field_value(row, "question"),
        response_fn=lambda row: row["response"] if "query" in row else gsm8k_response(row),
        description="MetaMathQA math reasoning ('The answer is: X'); evaluated on gsm8k + math.",
        paper="train n=395,000; test GSM8K-Platinum n=1,209 + MATH n=5,000",
    )


def s1_response(row: Row) -> str:
    if "attempt" not in row:
        return gsm8k_response(row)
    trajectories = row.get("thinking_trajectories") or []
    thinking = str(trajectories[0]).strip() if trajectories else ""
    attempt = str(row["attempt"]).strip()
    return f"{thinking}\n\n{attempt}" if thinking else attempt


@register("simplescaling")
def simplescaling() -> Task:
    local = _gsm8k_substitute("SimpleScaling (s1K)")
    train = SplitSpec(
        local=local.local,
        hub=HubSource("simplescaling/s1K", None, "train", ("question", "attempt")),
        note=local.note + " The paper's n=54,484 suggests the 59K pool "
        "(simplescaling/data_ablation_full59K, same fields); the Hub source here is s1K.",
    )
    return Task(
        name="simplescaling",
        family="cot",
        answer_type="numeric",
        splits={"train": train},
        eval_tasks=("gsm8k", "math"),
        question_fn=lambda row: field_value(row, "question"),
        response_fn=s1_response,
        description="s1 (simple test-time scaling) reasoning traces: thinking trajectory + attempt.",
        paper="train n=54,484; test GSM8K-Platinum n=1,209 + MATH n=5,000",
    )


# --- Multiple choice / yes-no ------------------------------------------------------------------------------

MEDMCQA_OPTIONS = ("opa", "opb", "opc", "opd")


def medmcqa_gold(row: Row) -> str:
    return letter(int(field_value(row, "cop")), 4)


def medmcqa_response(row: Row) -> str:
    explanation = str(row.get("exp") or "").strip()
    final = answer_line(medmcqa_gold(row))
    return f"{explanation}\n{final}" if explanation else final


@register("medmcqa")
def medmcqa(eval_fraction: float = 0.5, split_seed: int = 0) -> Task:
    frac, seed = check_fraction("eval_fraction", eval_fraction), check_int("split_seed", split_seed)
    fields = ("question", *MEDMCQA_OPTIONS, "cop")

    def part(name: str) -> Partition:
        return Partition(name, lambda row: row["question"], frac, seed, "question")

    path = "medmcqa/validation.jsonl"
    return Task(
        name="medmcqa",
        family="cot",
        answer_type="choice",
        splits={
            "train": SplitSpec(
                local=(LocalSource(path, fields, part("train")),),
                hub=HubSource("openlifescienceai/medmcqa", None, "train", fields),
                note="Local: the train part of a seeded split of the validation file (the Hub train split is "
                "not local). No 'exp' explanation field locally, so the response is only 'The answer is X.'",
            ),
            "eval": SplitSpec(
                local=(LocalSource(path, fields, part("eval")),),
                hub=HubSource("openlifescienceai/medmcqa", None, "validation", fields),
                note="Local: the held-out part of the same seeded split (never overlaps the train part).",
            ),
        },
        question_fn=lambda row: multiple_choice(row["question"], [row[k] for k in MEDMCQA_OPTIONS]),
        response_fn=medmcqa_response,
        gold_fn=medmcqa_gold,
        description="Medical entrance-exam multiple choice (4 options); response = explanation + answer.",
        paper="train n=182,555; test n=4,183 (validation)",
    )


def pubmedqa_question(row: Row) -> str:
    contexts = field_value(row, "context")
    paragraphs = contexts.get("contexts", []) if isinstance(contexts, dict) else contexts
    text = "\n".join(str(p).strip() for p in paragraphs)
    return f"{text}\n\nQuestion: {field_value(row, 'question')}"


def pubmedqa_gold(row: Row) -> str:
    decision = str(field_value(row, "final_decision")).strip().lower()
    if decision not in answers.YESNO:
        raise ValueError(f"final_decision must be yes/no/maybe, got {decision!r}")
    return decision


@register("pubmedqa")
def pubmedqa() -> Task:
    fields = ("pubid", "question", "context", "long_answer", "final_decision")
    path, ids = "pubmed_qa/pqa_labeled/train.jsonl", "pubmed_qa/pqa_labeled/official_test_pubids.jsonl"
    return Task(
        name="pubmedqa",
        family="cot",
        answer_type="yesno",
        answer_fallback=True,  # as answers.py documents for yes/no: the last yes/no/maybe word without a marker
        splits={
            "train": SplitSpec(
                local=(LocalSource(path, fields, Membership(ids, "pubid", keep=False)),),
                hub=HubSource("qiaojin/PubMedQA", "pqa_artificial", "train", fields),
                note="Local: the 500 pqa_labeled questions outside the official test set (the paper "
                "trains on pqa_artificial, Hub only).",
            ),
            "eval": SplitSpec(
                local=(LocalSource(path, fields, Membership(ids, "pubid", keep=True)),),
                hub=HubSource("qiaojin/PubMedQA", "pqa_labeled", "train", fields),
                note="Local: the authors' 500 official test questions; the paper evaluates on all 1000 "
                "pqa_labeled rows (source='hub').",
            ),
        },
        question_fn=pubmedqa_question,
        response_fn=lambda row: (
            f"{str(field_value(row, 'long_answer')).strip()}\n{answer_line(pubmedqa_gold(row))}"
        ),
        gold_fn=pubmedqa_gold,
        description="Biomedical yes/no/maybe questions over abstracts; response = long answer + answer line.",
        paper="train n=211,168 (pqa_artificial); test n=1,000 (pqa_labeled)",
    )


def mmlu_options(row: Row) -> list[str]:
    return list(row["options"] if "options" in row else field_value(row, "choices"))


def mmlu_gold(row: Row) -> str:
    options = mmlu_options(row)
    ans = field_value(row, "answer")
    if isinstance(ans, str) and not ans.isdigit():
        ans = ans.strip().upper()
        letter(answers.CHOICE_LETTERS.index(ans), len(options))
        return ans
    return letter(int(ans), len(options))


def mmlu_response(row: Row) -> str:
    cot = str(row.get("cot_content") or "").strip()
    cot = re.sub(r"^A:\s*", "", cot)
    return cot if cot else answer_line(mmlu_gold(row))


def _mmlu_key(row: Row) -> str:
    return f"{row['question']} || {' | '.join(map(str, mmlu_options(row)))}"


@register("mmlu_pro_cot")
def mmlu_pro_cot(eval_fraction: float = 0.1, split_seed: int = 0) -> Task:
    frac, seed = check_fraction("eval_fraction", eval_fraction), check_int("split_seed", split_seed)

    def part(name: str) -> Partition:
        return Partition(name, _mmlu_key, frac, seed, "question+options")

    local_fields, hub_fields = ("question", "choices", "answer"), ("question", "options", "answer")
    path = "mmlu/test.jsonl"
    return Task(
        name="mmlu_pro_cot",
        family="cot",
        answer_type="choice",
        splits={
            "train": SplitSpec(
                local=(LocalSource(path, local_fields, part("train")),),
                hub=HubSource("TIGER-Lab/MMLU-Pro", None, "test", hub_fields, part("train")),
                note="MMLU-Pro / MMLUProCoT are not local: cais/mmlu test (4 options) substitutes, "
                "seeded split by question into SFT and eval parts; the response is 'The answer is X.' "
                "(MMLU-Pro rows use cot_content when present). The paper's 123,836-row MMLUProCoT set "
                "(D. B. Lee, 2025) is a separate Hub repository not pinned here.",
            ),
            "eval": SplitSpec(
                local=(LocalSource(path, local_fields, part("eval")),),
                hub=HubSource("TIGER-Lab/MMLU-Pro", None, "test", hub_fields, part("eval")),
            ),
        },
        question_fn=lambda row: multiple_choice(field_value(row, "question"), mmlu_options(row)),
        response_fn=mmlu_response,
        gold_fn=mmlu_gold,
        description="Multi-subject multiple choice (MMLU-Pro: up to 10 options A-J) with chain of thought.",
        paper="train n=123,836; test n=567",
    )


def race_question(row: Row) -> str:
    stem = (
        f"{str(field_value(row, 'article')).strip()}\n\nQuestion: {str(field_value(row, 'question')).strip()}"
    )
    return multiple_choice(stem, list(field_value(row, "options")))


def race_gold(row: Row) -> str:
    ans = str(field_value(row, "answer")).strip().upper()
    letter(answers.CHOICE_LETTERS.index(ans), len(row["options"]))
    return ans


@register("race")
def race(eval_fraction: float = 0.5, split_seed: int = 0) -> Task:
    frac, seed = check_fraction("eval_fraction", eval_fraction), check_int("split_seed", split_seed)

    def part(name: str) -> Partition:
        return Partition(name, lambda row: row["article"], frac, seed, "article")

    fields, path = ("article", "question", "options", "answer"), "race/subset.jsonl"
    return Task(
        name="race",
        family="cot",
        answer_type="choice",
        splits={
            "train": SplitSpec(
                local=(LocalSource(path, fields, part("train")),),
                hub=HubSource("ehovy/race", "all", "train", fields),
                note="Local: a 1000-row RACE subset of unknown split, split (seeded, by article, so no "
                "article is in both parts) into SFT and eval parts. Response = 'The answer is X.' "
                "(no rationale).",
            ),
            "eval": SplitSpec(
                local=(LocalSource(path, fields, part("eval")),),
                hub=HubSource("ehovy/race", "all", "test", fields),
            ),
        },
        question_fn=race_question,
        response_fn=lambda row: answer_line(race_gold(row)),
        gold_fn=race_gold,
        description="Reading comprehension (middle/high-school exams), 4 options.",
        paper="train n=92,737; test n=4,934",
    )
