"""Parameter L2 norms per layer group (paper Appendix F.3, Figs. 29-30).

Every parameter tensor's L2 (Frobenius) norm is computed in float64. Tensors are grouped by module:
``embedding`` (the input embedding), ``layers.i`` (each decoder block: attention, MLP and its norms),
``final_norm`` (``model.norm``; GPT-NeoX ``final_layer_norm``), ``lm_head`` (GPT-NeoX ``embed_out``) and, if
anything is left, ``other``. Parameters are enumerated once (``named_parameters()`` de-duplicates), so a tied
``lm_head`` (same tensor as the embedding) is counted once, in ``embedding``; its group is then reported with
``tied=True``, ``counted=False``, the shared weight's norm for reference, ``num_params=0`` and fractions 0.

A group's ``norm`` is ``sqrt(sum of squares)`` over its tensors; ``total_norm`` is that over all counted
tensors.

Fractions. Fig. 30 plots a "per-layer L2-norm fraction" of the "total model norm", where "the depicted
layer-wise values are the sum of all of the layers parameters" (norms). We read this as ``fraction = (sum of
the group's tensor norms) / (sum of all tensor norms)`` (``sum_of_tensor_norms`` /
``total_sum_of_tensor_norms``). Because the paper is not explicit, we also give ``fraction_sq = norm**2 /
total_norm**2`` (squared-norm share). Both sum to 1 over the counted groups (up to float rounding).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from plasticity import architectures

FRACTION_DEFINITION = (
    "sum of the group's per-tensor L2 norms / sum of all per-tensor L2 norms (Fig. 30 caption)"
)
FRACTION_SQ_DEFINITION = "group squared L2 norm / total squared L2 norm"


def _group_of_params(model: nn.Module) -> tuple[dict[int, str], list[str], bool]:
    """Map ``id(param) -> group``; the ordered group names; whether ``lm_head`` is tied to the embedding."""
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()  # lm_head; GPT-NeoX: embed_out
    groups: list[tuple[str, nn.Module | None]] = [("embedding", emb)]
    groups += [(f"layers.{i}", layer) for i, layer in enumerate(architectures.decoder_layers(model))]
    groups += [("final_norm", architectures.final_norm(model)), ("lm_head", head)]
    emb_w = emb.weight
    tied = head is not None and getattr(head, "weight", None) is not None and head.weight is emb_w
    owner: dict[int, str] = {}
    for name, module in groups:
        if module is None:
            continue
        for p in module.parameters():
            owner.setdefault(id(p), name)  # embedding first: a tied lm_head weight stays in "embedding"
    names = [n for n, m in groups if m is not None]
    return owner, names, tied


def parameter_norms(model: nn.Module, *, per_parameter: bool = True) -> dict[str, Any]:
    """L2 norms of all parameters, per group, total, and each group's share of the total.

    Returns ``{"total_norm", "total_sum_of_tensor_norms", "num_params", "tied_lm_head", "fraction_definition",
    "fraction_sq_definition", "groups": [{"name", "norm", "sum_of_tensor_norms", "fraction", "fraction_sq",
    "num_params", "num_tensors", "tied", "counted"}], "parameters": {name: {"group", "norm", "numel"}}}``
    (``parameters`` only with ``per_parameter=True``). Groups are in model order: embedding, layers.0..,
    final_norm, lm_head, other.
    """
    owner, names, tied = _group_of_params(model)
    acc: dict[str, dict[str, Any]] = {
        n: {"sq": [], "norms": [], "num_params": 0, "num_tensors": 0} for n in [*names, "other"]
    }
    params: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for pname, p in model.named_parameters():
            g = owner.get(id(p), "other")
            nrm = float(torch.linalg.vector_norm(p.detach(), dtype=torch.float64))
            a = acc[g]
            a["sq"].append(nrm * nrm)
            a["norms"].append(nrm)
            a["num_params"] += p.numel()
            a["num_tensors"] += 1
            if per_parameter:
                params[pname] = {"group": g, "norm": nrm, "numel": int(p.numel())}
        shared_norm = float(
            torch.linalg.vector_norm(model.get_input_embeddings().weight.detach(), dtype=torch.float64)
        )

    total_sq = math.fsum(x for a in acc.values() for x in a["sq"])
    total_sum = math.fsum(x for a in acc.values() for x in a["norms"])
    total_norm = math.sqrt(total_sq)
    out_groups: list[dict[str, Any]] = []
    for name in [*names, "other"]:
        a = acc[name]
        if name == "other" and a["num_tensors"] == 0:
            continue
        head_tied = tied and name == "lm_head"
        sq, s = math.fsum(a["sq"]), math.fsum(a["norms"])
        out_groups.append(
            {
                "name": name,
                "norm": shared_norm if head_tied else math.sqrt(sq),
                "sum_of_tensor_norms": shared_norm if head_tied else s,
                "fraction": 0.0 if head_tied or total_sum == 0 else s / total_sum,
                "fraction_sq": 0.0 if head_tied or total_sq == 0 else sq / total_sq,
                "num_params": int(a["num_params"]),
                "num_tensors": int(a["num_tensors"]),
                "tied": bool(tied and name in ("embedding", "lm_head")),
                "counted": not head_tied,
            }
        )
    out: dict[str, Any] = {
        "total_norm": total_norm,
        "total_sum_of_tensor_norms": total_sum,
        "num_params": int(sum(a["num_params"] for a in acc.values())),
        "tied_lm_head": bool(tied),
        "fraction_definition": FRACTION_DEFINITION,
        "fraction_sq_definition": FRACTION_SQ_DEFINITION,
        "groups": out_groups,
    }
    if per_parameter:
        out["parameters"] = params
    return out
