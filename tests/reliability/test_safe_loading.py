"""Safe loading (issue #8): every Hub download takes the user's `revision`; weights only from safetensors;
trainer state only with ``torch.load(weights_only=True)``; remote code off unless asked for.

The loaders are monkeypatched to record their arguments, so nothing here touches the network.
"""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from plasticity.config import FinetuneConfig, PretrainConfig, from_dict
from plasticity.errors import CheckpointError, ConfigError, DataError

SRC = Path(__file__).resolve().parents[2] / "src" / "plasticity"
HUB_CALLS = {"from_pretrained", "load_dataset", "hf_hub_download", "snapshot_download"}
# Hub calls that take no user revision, and why (a new call without `revision=` must be added here on purpose)
NO_REVISION = {
    ("analysis/analyzer.py", "load_dataset"): "fallback copy of a built-in probe set; its id is fixed in the code",
}


class Captured(Exception):
    """Raised by the fake loaders once they have recorded their arguments."""


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Fake transformers/datasets loaders: record (what, kwargs) and stop the caller with `Captured`."""
    import huggingface_hub
    import transformers

    seen: list[tuple[str, dict[str, Any]]] = []

    def fake(what: str):
        def load(*args: Any, **kwargs: Any) -> Any:
            seen.append((what, dict(kwargs, _args=args)))
            raise Captured(what)
        return load

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake("model"))
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", fake("reward"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tokenizer"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake("snapshot"))
    monkeypatch.delenv("PLASTICITY_HUB_MOCK", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake("dataset")))
    return seen


def _only(calls: list[tuple[str, dict[str, Any]]], what: str) -> dict[str, Any]:
    found = [kw for w, kw in calls if w == what]
    assert len(found) == 1, calls
    return found[0]


def test_model_revision_reaches_the_hub_download(calls) -> None:
    """A Hub model is fetched by `checkpoints.hub_snapshot` at the revision, never as pickled weights; the loader
    itself only ever sees the local snapshot."""
    from plasticity.checkpoints import load_model_checked

    with pytest.raises(CheckpointError, match="org/model@0123abc"):
        load_model_checked("org/model", revision="0123abc")
    kw = _only(calls, "snapshot")
    assert kw["_args"] == ("org/model",) and kw["revision"] == "0123abc" and "*.bin" in kw["ignore_patterns"]
    assert not [w for w, _ in calls if w == "model"]


def test_tokenizer_revision(calls) -> None:
    from plasticity.tokenizer import load_tokenizer

    with pytest.raises(ConfigError, match="org/tok"):
        load_tokenizer("org/tok", revision="v1.0")
    kw = _only(calls, "snapshot")
    assert kw["revision"] == "v1.0" and "*.safetensors" not in kw["allow_patterns"]  # no weights for a tokenizer


def test_pretraining_data_revision(calls) -> None:
    from plasticity.data.sources import iter_documents

    with pytest.raises(DataError, match="org/corpus@fedcba9"):  # the loader's failure, as one line
        list(iter_documents("hf:org/corpus", hf_revision="fedcba9"))
    kw = _only(calls, "dataset")
    assert kw["revision"] == "fedcba9" and kw["_args"][0] == "org/corpus"


@pytest.mark.parametrize("make_task", ["builtin", "yaml"])
def test_task_dataset_revision(calls, tmp_path: Path, make_task: str) -> None:
    from plasticity.tasks import get_task, load_rows

    if make_task == "builtin":
        task = get_task("gsm8k", revision="abc1234")
    else:
        spec = tmp_path / "t.yaml"
        spec.write_text("name: t_rev\nfamily: cot\nanswer_type: numeric\ndata: {train: x.jsonl}\n"
                        "question_template: '{q}'\nresponse_template: '{a}'\ngold_field: a\n"
                        "hub: {train: {path: org/t, split: train, revision: abc1234}}\n")
        task = get_task(str(spec))
    assert "@abc1234" in task.splits["train"].hub.describe()
    with pytest.raises(DataError, match="abc1234"):  # the loader's failure is reported with the pinned source
        load_rows(task, "train", source="hub")
    assert _only(calls, "dataset")["revision"] == "abc1234"
    assert get_task("gsm8k").splits["train"].hub.revision is None  # the option does not leak into the registry


def test_finetune_config_revision_reaches_the_model_loader(calls, tmp_path: Path) -> None:
    from plasticity.train.finetune import run_finetune

    cfg = from_dict(FinetuneConfig, {"init_from": "org/base", "revision": "r2", "out_dir": str(tmp_path / "ft")})
    with pytest.raises(CheckpointError, match="org/base@r2"):
        run_finetune(cfg, log=lambda _: None)
    assert _only(calls, "snapshot")["revision"] == "r2"


def test_pretrain_init_from_revision(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub

    from plasticity.train.pretrain import run_pretrain

    seen: list[dict[str, Any]] = []

    def fake_snapshot(repo_id, **kw):  # only the Hub is faked: the run's own BPE tokenizer loads for real
        seen.append(dict(kw, repo_id=repo_id))
        raise Captured("snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.delenv("PLASTICITY_HUB_MOCK", raising=False)
    cfg = from_dict(PretrainConfig, {
        "out_dir": str(tmp_path / "pt"), "model": {"init_from": "org/base", "revision": "r3"},
        "data": {"source": "packaged:bbc_news", "max_documents": 60, "seq_len": 32},
        "tokenizer": {"vocab_size": 300, "train_documents": 60}, "train": {"max_steps": 1, "threads": 1}})
    with pytest.raises(CheckpointError, match="org/base@r3"):
        run_pretrain(cfg, log=lambda _: None)
    assert [(k["repo_id"], k["revision"]) for k in seen] == [("org/base", "r3")]


def test_evaluate_revision(calls, monkeypatch, tmp_path: Path) -> None:
    from plasticity.evaluate.evaluator import run_evaluate

    with pytest.raises(CheckpointError, match="org/model"):
        run_evaluate("org/model", task="demo_arith", out_dir=tmp_path / "eval", revision="r4", log=lambda _: None)
    assert _only(calls, "snapshot")["revision"] == "r4"


# ------------------------------------------------------------------------------------------- static checks


def _calls(name: str) -> list[tuple[str, ast.Call]]:
    """(file relative to src/plasticity, call) of every call of a function or method called `name`."""
    out = []
    for f in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if called == name:
                    out.append((str(f.relative_to(SRC)), node))
    return out


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_hub_call_passes_revision() -> None:
    missing = sorted({(f, name) for name in HUB_CALLS for f, c in _calls(name) if _kw(c, "revision") is None})
    assert missing == sorted(NO_REVISION), missing


def test_weights_only_from_safetensors_and_torch_load_weights_only() -> None:
    for f, c in _calls("from_pretrained"):
        target = ast.unparse(c.func)
        if "Model" in target:  # model weights (tokenizers carry no pickles)
            v = _kw(c, "use_safetensors")
            assert isinstance(v, ast.Constant) and v.value is True, f"{f}:{c.lineno}: {target} without safetensors"
    loads = _calls("load")
    torch_loads = [(f, c) for f, c in loads if ast.unparse(c.func) == "torch.load"]
    assert torch_loads, "torch.load is used for trainer state"
    for f, c in torch_loads:
        v = _kw(c, "weights_only")
        assert isinstance(v, ast.Constant) and v.value is True, f"{f}:{c.lineno}: torch.load without weights_only"


def test_remote_code_is_off_by_default() -> None:
    from plasticity.config import ModelConfig

    assert ModelConfig().trust_remote_code is False and FinetuneConfig().trust_remote_code is False
    for f, c in _calls("from_pretrained"):
        v = _kw(c, "trust_remote_code")
        assert not (isinstance(v, ast.Constant) and v.value is True), f"{f}:{c.lineno}: trust_remote_code=True"
    for f in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.arguments):
                pos = node.posonlyargs + node.args
                pairs = [*zip(pos[len(pos) - len(node.defaults):], node.defaults, strict=True),
                         *zip(node.kwonlyargs, node.kw_defaults, strict=True)]
                for arg, d in pairs:
                    bad = arg.arg == "trust_remote_code" and isinstance(d, ast.Constant) and d.value is True
                    assert not bad, f"{f}: trust_remote_code defaults to True"
