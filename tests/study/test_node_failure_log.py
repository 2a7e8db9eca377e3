"""A node that crashes (an unexpected exception, not a user error) leaves its traceback in the node's log, so
a failed study node can be debugged from `logs/<node>.log` alone; a user error stays one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from plasticity.errors import UserError
from plasticity.study import worker as nodes
from plasticity.study.stages import STAGES, Stage


class _Crash(Stage):
    kind = "crash"

    def run(self, node, ctx):  # noqa: ANN001, ANN201 - the Stage interface
        def deep() -> None:
            raise ValueError("continuation of 264 tokens exceeds the window of 256")

        deep()


class _Refuse(Stage):
    kind = "refuse"

    def run(self, node, ctx):  # noqa: ANN001, ANN201
        raise UserError("no such task 'nope'")


@pytest.mark.parametrize("stage", [_Crash(), _Refuse()])
def test_failed_node_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: Stage) -> None:
    monkeypatch.setitem(STAGES, stage.kind, stage)
    node = {"id": f"{stage.kind}-000", "kind": stage.kind, "deps": [], "out": str(tmp_path / "out"), "config": {},
            "label": ""}
    log = tmp_path / "logs" / "node.log"
    result = nodes.run_node(node, str(tmp_path), 1, str(log))
    assert result["status"] == "failed"
    text = log.read_text()
    if isinstance(stage, _Crash):
        assert result["reason"] == "ValueError: continuation of 264 tokens exceeds the window of 256"
        assert "Traceback (most recent call last)" in text and "in deep" in text
    else:
        assert result["reason"] == "no such task 'nope'" and "Traceback" not in text
    assert text.rstrip().endswith(f"{stage.kind}-000 failed: {result['reason']}")
