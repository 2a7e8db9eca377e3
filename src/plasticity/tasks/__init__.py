"""Fine-tuning tasks: registry, data loading (local files or the Hub), SFT formatting and answer checking.

Quick use::

    from plasticity.tasks import get_task, load_rows
    task = get_task("gsm8k")
    rows = load_rows(task, "train", limit=100)      # rows.counts records skipped rows
    question, response = task.format_example(rows[0])
    correct = task.score(generated_text, eval_row)

Built-in tasks: metamathqa, gsm8k, math, medmcqa, pubmedqa, mmlu_pro_cot, race, simplescaling (CoT);
hellaswag, winogrande, piqa, arc_easy, arc_challenge, sst2 (cloze); safety; demo_arith, demo_choice (offline,
no data); addition (generated, with a difficulty knob). A path to a YAML file is also a task name (see
`plasticity.tasks.custom`).
"""

from __future__ import annotations

from plasticity.tasks.answers import ANSWER_TYPES, answer_key, extract_answer, is_correct
from plasticity.tasks.base import (
    DEFAULT_TEMPLATE,
    FAMILIES,
    ClozeItem,
    HubSource,
    LocalSource,
    Partition,
    SplitSpec,
    Task,
    render,
)
from plasticity.tasks.custom import load_task_file, task_from_config
from plasticity.tasks.data_root import ENV_VAR, resolve_data_root
from plasticity.tasks.loading import LoadedRows, load_rows
from plasticity.tasks.registry import (
    describe_tasks,
    get_task,
    list_tasks,
    register,
    register_task,
    task_names,
    task_options,
)

__all__ = [
    "ANSWER_TYPES",
    "DEFAULT_TEMPLATE",
    "ENV_VAR",
    "FAMILIES",
    "ClozeItem",
    "HubSource",
    "LoadedRows",
    "LocalSource",
    "Partition",
    "SplitSpec",
    "Task",
    "answer_key",
    "describe_tasks",
    "extract_answer",
    "get_task",
    "is_correct",
    "list_tasks",
    "load_rows",
    "load_task_file",
    "register",
    "register_task",
    "render",
    "resolve_data_root",
    "task_from_config",
    "task_names",
    "task_options",
]
