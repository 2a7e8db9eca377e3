"""A fine-tuned checkpoint carries its fine-tuning template as the tokenizer's `chat_template` (issue 29), so
`tokenizer.apply_chat_template` (what lm-eval's --apply_chat_template, TRL and serving engines call) gives exactly
the prompt fine-tuning trained on; lm-evaluation-harness scores such a checkpoint with the documented command."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plasticity.data.sft import chat_template, encode_example, prompt_text
from tests.conftest import run_cli

TEMPLATES = [
    "Human: {question}\nAssistant: {response}",  # the paper's (the default)
    'Q "{question}" \\ {{x}} é 😀 again: {question}?\n### A:{response}\nignored after the response',
]
QUESTION, RESPONSE = 'What is 2+3? {x} "quoted" \\n', "2+3=5\n#### 5"


def _prompt_ids(tok, messages: list[dict[str, str]], **kw) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, **kw)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _with_bos(tok):
    """`tok` changed to add a BOS token before every text, as Llama's tokenizer does."""
    from tokenizers import processors

    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok.pad_token} $A", pair=f"{tok.pad_token} $A $B", special_tokens=[(tok.pad_token, tok.pad_token_id)])
    assert tok("x")["input_ids"][0] == tok.pad_token_id
    return tok


@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
@pytest.mark.parametrize("template", TEMPLATES, ids=["paper", "tricky"])
def test_chat_template_reproduces_the_training_prompt(tiny_run: Path, template: str, bos: bool) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_run / "final")
    if bos:
        tok = _with_bos(tok)
    tok.chat_template = chat_template(template, tok)
    user = [{"role": "user", "content": QUESTION}]
    ex = encode_example(tok, template, QUESTION, RESPONSE)
    n_prompt = ex.labels.count(-100)
    assert _prompt_ids(tok, user, add_generation_prompt=True) == ex.input_ids[:n_prompt]
    text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert text == (tok.pad_token if bos else "") + prompt_text(template, QUESTION)
    turn = [*user, {"role": "assistant", "content": RESPONSE}]
    assert tok.apply_chat_template(turn, tokenize=False) == text + RESPONSE + tok.eos_token
    with pytest.raises(Exception, match="system prompt"):
        tok.apply_chat_template([{"role": "system", "content": "be brief"}, *user], tokenize=False)


@pytest.fixture(scope="module")
def finetuned(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fine-tuned run of the session's tiny model with a non-default template (the real CLI)."""
    template = "### Question:\n{question}\n\n### Answer:\n{response}"
    out = tmp_path_factory.mktemp("chat") / "ft"
    r = run_cli("finetune", f"init_from={tiny_run}", f"out_dir={out}", "task=demo_arith", "max_examples=16",
                f"template={json.dumps(template)}", "cutoff_len=512", "train.micro_batch_size=8", "train.max_steps=2",
                "train.threads=1")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, template


def test_saved_fine_tune_applies_its_template(finetuned: tuple[Path, str]) -> None:
    from transformers import AutoTokenizer

    from plasticity.tasks.loading import load_rows
    from plasticity.tasks.registry import get_task

    run, template = finetuned
    tok = AutoTokenizer.from_pretrained(run / "final")  # as lm-eval / vLLM / TRL load it
    assert tok.chat_template
    task = get_task("demo_arith")
    for row in load_rows(task, "eval", limit=5).rows:
        q, r = task.format_example(row)
        ex = encode_example(tok, template, q, r)
        got = _prompt_ids(tok, [{"role": "user", "content": q}], add_generation_prompt=True)
        assert got == ex.input_ids[:ex.labels.count(-100)]
        assert tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                       add_generation_prompt=True) == prompt_text(template, q)
    files = json.loads((run / "final" / "manifest.json").read_text())["files"]
    assert "chat_template.jinja" in files, sorted(files)  # sha256-verified with the weights when loaded


@pytest.mark.slow
def test_lm_eval_scores_a_fine_tuned_checkpoint_with_its_chat_template(finetuned: tuple[Path, str],
                                                                       tmp_path: Path) -> None:
    """The README's lm-evaluation-harness command, on a local two-question task instead of gsm8k (offline)."""
    for module in ("lm_eval", "accelerate"):  # lm-eval's `hf` model needs accelerate (its [hf] extra)
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"lm-evaluation-harness with its hf backend is not installed ({module}: pip install "
                        "'lm-eval[hf]')")
    run, _ = finetuned
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {a} + {a}?", "answer": str(2 * a)}) + "\n"
                            for a in (2, 3)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "arith_local.yaml").write_text(
        "task: arith_local\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 8\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n")
    out = tmp_path / "lm_eval_out"
    from tests.project.test_readme import readme_commands

    argv = next(a for a in readme_commands() if a[0] == "lm_eval")  # the README's command, pointed at this run
    argv[argv.index("--model_args") + 1] = re.sub(r"pretrained=[^,]+", f"pretrained={run / 'final'}",
                                                  argv[argv.index("--model_args") + 1])
    argv[argv.index("--tasks") + 1] = "arith_local"
    argv[argv.index("--batch_size") + 1] = "2"
    cmd = [sys.executable, "-m", "lm_eval", *argv[1:], "--include_path", str(tasks), "--device", "cpu",
           "--log_samples", "--output_path", str(out)]
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    samples = [json.loads(line) for f in out.rglob("samples_arith_local_*.jsonl") for line in f.open()]
    assert len(samples) == 2
    prompt = samples[0]["arguments"]["gen_args_0"]["arg_0"]
    assert prompt == "### Question:\nWhat is 2 + 2?\n\n### Answer:\n"  # the fine-tuning template, applied
