"""``python -m plasticity.study.evaluate_torchrun NODE.json RESULT.json`` under torchrun: one evaluate node of a
study (``resources.evaluate_nproc`` > 1) split across the processes; rank 0 measures stability and writes the node
result (`plasticity.study.stages.evaluate.evaluate_node`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from plasticity.files import write_json
from plasticity.study.stages.base import Node
from plasticity.study.stages.evaluate import evaluate_node


def main(spec: str, result: str) -> None:
    node = Node(**json.loads(Path(spec).read_text()))
    rank0 = int(os.environ.get("RANK", "0")) == 0
    res = evaluate_node(node, print if rank0 else (lambda _m: None))
    if rank0:
        write_json(Path(result), res)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
