"""Attention pseudo-rank (paper Section 5.2, Appendix F.2.1; Kobayashi et al., 2024).

Per-family weight layout (separate ``q/k/v/o_proj`` or GPT-NeoX's fused ``query_key_value``) is read by the
family's adapter in `plasticity.architectures`. For every layer and every *query* head ``h`` (its key/value
head is ``h' = h // (n_heads // n_kv_heads)``, exactly as Hugging Face ``repeat_kv`` shares K/V heads) we form
two ``hidden x hidden`` matrices from the weights (``nn.Linear.weight`` is ``[out, in]``):

* ``W_QK^h = W_K^{h'T} W_Q^h`` with ``W_Q^h = q_proj.weight[h*d:(h+1)*d]`` and ``W_K^{h'} =
  k_proj.weight[h'*d:(h'+1)*d]`` (each ``[head_dim, hidden]``). Convention: the (pre-RoPE, unscaled) score of
  query token ``i`` for key token ``j`` is ``q_i . k_j = x_i^T W_Q^T W_K x_j = x_j^T W_QK x_i``, i.e. ``W_QK``
  maps the query input and is read by the key input. Singular values do not depend on which side is
  transposed.
* ``W_VP^h = W_O^h W_V^{h'}`` with ``W_O^h = o_proj.weight[:, h*d:(h+1)*d]`` (``[hidden, head_dim]``) and
  ``W_V^{h'} = v_proj.weight[h'*d:(h'+1)*d]``: head ``h``'s contribution to the attention output for a value
  token ``x_j`` is ``W_VP^h x_j`` (times its attention weight).

Projection biases (if any) add affine terms and are not part of these bilinear/linear maps. RoPE is a
position-dependent rotation applied after the projections and is not part of ``W_QK`` (as in the paper).
OLMo-2's ``q_norm``/``k_norm`` RMSNorms act on the full projected q/k; by default (``fold_qk_norm=False``)
they are ignored, as the paper defines ``W_QK = W_K^T W_Q`` from the projection weights. With
``fold_qk_norm=True`` their elementwise gains are folded in (``diag(g_q) W_Q``, ``diag(g_k) W_K``), so
``W_QK`` is the exact bilinear form up to the per-token RMS scalars.

Pseudo-rank (eq. 4): the smallest ``k`` with ``sum_{i<=k} s_i >= 0.95 * sum_i s_i``. The paper reports it as
the ratio ``k/n``; since ``rank(W_QK^h) <= head_dim`` ("naturally low-rank since its rank is at most d_head")
and the paper calls default-weight-decay matrices "near full-rank", we report ``fraction = k / min(head_dim,
hidden)`` (``n`` = number of non-trivial singular values) and, for completeness, ``fraction_of_hidden = k /
hidden`` (``n`` = all singular values of the ``hidden x hidden`` matrix). The paper plots the "average
pseudo-rank" (Figs. 5, 26-28) of a layer: we compute it per head and average over the layer's query heads
(``layers[i].mean``); ``mean`` averages over all layers and heads.

Singular values are computed in float64 with :func:`torch.linalg.svdvals`. ``method="factored"`` (default)
uses that a product ``A B^T`` of two ``hidden x d`` factors has the same non-zero singular values as ``R_A
R_B^T`` (reduced QR factors ``A = Q_A R_A``), so each SVD is ``d x d`` instead of ``hidden x hidden`` (exact
up to rounding; the remaining ``hidden - d`` singular values are exactly zero and do not change the
pseudo-rank). ``method="full"`` runs ``svdvals`` on the full ``hidden x hidden`` product (slow for large
models).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from plasticity import architectures
from plasticity.errors import CheckpointError

Method = Literal["factored", "full"]
_REL_TOL = 1e-12


def pseudo_rank(singular_values: torch.Tensor | np.ndarray | Sequence[float], threshold: float = 0.95) -> int:
    """Smallest ``k`` such that the ``k`` largest singular values sum to ``>= threshold`` of their total.

    Values are sorted (descending) first; an all-zero (or empty) input has pseudo-rank 0. A relative tolerance
    of ``1e-12`` absorbs rounding when the cumulative sum hits the target exactly.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if isinstance(singular_values, torch.Tensor):
        s = singular_values.detach().to("cpu", torch.float64)
    else:
        s = torch.as_tensor(np.asarray(singular_values, dtype=np.float64))
    s = s.flatten().abs()
    if s.numel() == 0:
        return 0
    s = torch.sort(s, descending=True).values
    total = float(s.sum())
    if total <= 0.0:
        return 0
    cum = torch.cumsum(s, 0)
    hit = cum >= threshold * total - _REL_TOL * total
    return int(torch.nonzero(hit)[0, 0]) + 1


PAPER_LAYERS = (5, 15)  # Figs 5, 26: "layers 5 and 15" (read as 0-based: OLMo-2-1B's 16 blocks are 0..15)


def selected_layers(num_layers: int, configured: Sequence[int] | None = None) -> dict[str, Any]:
    """The layers of the paper-style pseudo-rank (Figs 5, 26): `configured` (0-based) or the paper's 5 and 15.

    Every paper shape has >= 16 layers, so the paper's layers are taken as they are. A model with fewer layers
    gets the same relative depths instead (5/15 and 15/15 of its last index, rounded; the 4-layer default model:
    layers 1 and 3); configured layers beyond the model are dropped. Returns ``{"layers", "requested", "note"}``
    (``note`` says what was changed, None when nothing was)."""
    requested = list(configured) if configured else list(PAPER_LAYERS)
    last = num_layers - 1
    if configured:
        layers = sorted({i for i in requested if i <= last})
        note = None if len(layers) == len(set(requested)) else (
            f"layers {', '.join(str(i) for i in requested if i > last)} do not exist in a {num_layers}-layer model")
    elif last >= max(PAPER_LAYERS):
        layers, note = requested, None
    else:
        layers = sorted({round(i / max(PAPER_LAYERS) * last) for i in PAPER_LAYERS})
        note = (f"a {num_layers}-layer model has no layer 15: the paper's relative depths (5/15, 15/15) give layers "
                f"{', '.join(map(str, layers))}")
    return {"layers": layers, "requested": requested, "note": note}


def mean_over_layers(entry: dict[str, Any], layers: Sequence[int]) -> dict[str, float] | None:
    """``{"qk", "vp"}``: the pseudo-rank fraction averaged over the heads of `layers` of one
    :func:`attention_ranks` result (None when none of them was computed)."""
    rows = [ly for ly in entry.get("layers") or [] if ly.get("layer") in set(layers)]
    if not rows:
        return None
    return {k: float(np.mean([ly["mean"][k]["fraction"] for ly in rows])) for k in ("qk", "vp")}


def attention_geometry(model: nn.Module) -> dict[str, int]:
    """``num_layers``, ``num_heads``, ``num_kv_heads``, ``head_dim``, ``hidden_size`` of the model."""
    return asdict(architectures.geometry(model))


def kv_head(head: int, num_heads: int, num_kv_heads: int) -> int:
    """K/V head used by query head ``head`` (HF ``repeat_kv``: ``head // (num_heads // num_kv_heads)``)."""
    return head // (num_heads // num_kv_heads)


def _norm_gain(norm: nn.Module | None, n_heads: int, head_dim: int) -> torch.Tensor | None:
    """RMSNorm gain as ``[n_heads, head_dim]`` float64 (full-width or per-head norms), or None."""
    if norm is None or getattr(norm, "weight", None) is None:
        return None
    g = norm.weight.detach().to("cpu", torch.float64).flatten()
    if g.numel() == n_heads * head_dim:
        return g.view(n_heads, head_dim)
    if g.numel() == head_dim:
        return g.expand(n_heads, head_dim)
    raise ValueError(f"cannot fold a norm with {g.numel()} weights into {n_heads} heads of size {head_dim}")


def head_factors(
    model: nn.Module, layer: int, *, fold_qk_norm: bool = False
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-head factors ``(A, B)``, each ``[n_heads, hidden, head_dim]`` float64 on CPU, with ``W = A B^T``.

    ``"qk"``: ``A = W_K^{h'T}``, ``B = W_Q^{hT}`` (so ``W_QK = W_K^T W_Q``); ``"vp"``: ``A = W_O^h``,
    ``B = W_V^{h'T}`` (so ``W_VP = W_O W_V``).
    """
    geo = attention_geometry(model)
    nh, nkv, d = geo["num_heads"], geo["num_kv_heads"], geo["head_dim"]
    hw = architectures.head_weights(model, layer)  # the family's adapter (separate or fused projections)
    idx = torch.tensor([kv_head(h, nh, nkv) for h in range(nh)])
    wq, wk, wv, wo = hw.wq, hw.wk, hw.wv, hw.wo
    if fold_qk_norm:
        gq = _norm_gain(hw.q_norm, nh, d)
        gk = _norm_gain(hw.k_norm, nkv, d)
        if gq is not None:
            wq = wq * gq[:, :, None]
        if gk is not None:
            wk = wk * gk[:, :, None]
    wk, wv = wk[idx], wv[idx]  # per query head
    return {"qk": (wk.transpose(1, 2), wq.transpose(1, 2)), "vp": (wo, wv.transpose(1, 2))}


def head_matrices(model: nn.Module, layer: int, *, fold_qk_norm: bool = False) -> dict[str, torch.Tensor]:
    """``{"qk": W_QK, "vp": W_VP}``, each ``[n_heads, hidden, hidden]`` float64 (see module docstring)."""
    return {
        k: a @ b.transpose(1, 2)
        for k, (a, b) in head_factors(model, layer, fold_qk_norm=fold_qk_norm).items()
    }


def _singular_values(a: torch.Tensor, b: torch.Tensor, method: Method) -> torch.Tensor:
    """Singular values of ``A B^T`` for batched factors ``[n, hidden, d]`` -> ``[n, k]`` (descending)."""
    if method == "full" or a.shape[-1] >= a.shape[-2]:
        return torch.linalg.svdvals(a @ b.transpose(1, 2))
    if method != "factored":
        raise ValueError(f"unknown method {method!r}; use 'factored' or 'full'")
    ra = torch.linalg.qr(a, mode="r").R
    rb = torch.linalg.qr(b, mode="r").R
    return torch.linalg.svdvals(ra @ rb.transpose(1, 2))


def attention_ranks(
    model: nn.Module,
    threshold: float = 0.95,
    *,
    fold_qk_norm: bool = False,
    method: Method = "factored",
    layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Pseudo-rank of ``W_QK^h`` and ``W_VP^h`` for every (selected) layer and query head.

    Returns ``{"threshold", "method", "fold_qk_norm", "num_layers", "num_heads", "num_kv_heads", "head_dim",
    "hidden_size", "max_rank", "layers": [{"layer", "heads": [{"head", "kv_head", "qk": R, "vp": R}], "mean":
    {"qk": M, "vp": M}}], "mean": {"qk": M, "vp": M}}`` where ``R = {"rank": int, "fraction": rank/max_rank,
    "fraction_of_hidden": rank/hidden}`` and ``M`` has the same keys as floats averaged over heads
    (over all layers and heads for the top-level ``mean``).
    """
    if method not in ("factored", "full"):
        raise ValueError(f"unknown method {method!r}; use 'factored' or 'full'")
    geo = attention_geometry(model)
    nh, hid = geo["num_heads"], geo["hidden_size"]
    max_rank = min(geo["head_dim"], hid)
    sel = range(geo["num_layers"]) if layers is None else [int(i) for i in layers]

    def entry(k: int) -> dict[str, float | int]:
        return {"rank": k, "fraction": k / max_rank, "fraction_of_hidden": k / hid}

    def mean(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
        return {
            f: float(np.mean([r[key][f] for r in rows])) for f in ("rank", "fraction", "fraction_of_hidden")
        }

    out_layers: list[dict[str, Any]] = []
    all_heads: list[dict[str, Any]] = []
    with torch.no_grad():
        for li in sel:
            factors = head_factors(model, li, fold_qk_norm=fold_qk_norm)
            sv = {k: _singular_values(a, b, method) for k, (a, b) in factors.items()}
            heads = [
                {
                    "head": h,
                    "kv_head": kv_head(h, nh, geo["num_kv_heads"]),
                    "qk": entry(pseudo_rank(sv["qk"][h], threshold)),
                    "vp": entry(pseudo_rank(sv["vp"][h], threshold)),
                }
                for h in range(nh)
            ]
            all_heads.extend(heads)
            out_layers.append(
                {"layer": li, "heads": heads, "mean": {k: mean(heads, k) for k in ("qk", "vp")}}
            )
    return {
        "threshold": float(threshold),
        "method": method,
        "fold_qk_norm": bool(fold_qk_norm),
        **geo,
        "max_rank": max_rank,
        "layers": out_layers,
        "mean": {k: mean(all_heads, k) for k in ("qk", "vp")} if all_heads else {},
    }


def ranks_over_checkpoints(
    checkpoint_dirs: Sequence[tuple[int, str | Path]],
    threshold: float = 0.95,
    *,
    fold_qk_norm: bool = False,
    method: Method = "factored",
    layers: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """:func:`attention_ranks` for each ``(step, path)`` HF checkpoint dir, loaded one at a time in float32.

    Returns a list (input order) of ``{"step": int, "path": str, **attention_ranks(...)}``.
    """
    from plasticity.checkpoints import load_model_checked

    results: list[dict[str, Any]] = []
    for step, path in checkpoint_dirs:
        p = Path(path)
        if not (p / "config.json").is_file():
            raise CheckpointError(f"{p}: not a Hugging Face checkpoint directory (no config.json)")
        model = load_model_checked(p)  # manifest (sha256), architecture and safetensors checks first
        try:
            res = attention_ranks(model, threshold, fold_qk_norm=fold_qk_norm, method=method, layers=layers)
        finally:
            del model
            gc.collect()
        results.append({"step": int(step), "path": str(p), **res})
    return results
