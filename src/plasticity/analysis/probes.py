"""Linear probes on last-token hidden states of every layer (paper Section 5.1, Appendix F.1).

Features. For each text, the hidden state of its last (non-pad) token is taken from every entry of
``output_hidden_states=True``: index 0 is the embedding output, index ``i`` (``1..L``) the output of block
``i-1``. In transformers 5.x (checked on 5.23, ``utils/output_capturing.capture_outputs`` with
``tie_last_hidden_states=True``) the last entry is replaced by ``last_hidden_state``, i.e. it is **after** the
final norm (``model.model.norm``; GPT-NeoX ``final_layer_norm``); entries ``0..L-1`` are pre-norm
residual-stream states. This matches the transformers 4.x behaviour. Texts are tokenized without padding and
right-padded here, so the last real token is at ``length - 1``.

Probes. Per layer: ``StandardScaler`` + ``LogisticRegression`` (lbfgs, ``max_iter=1000``, fixed
``random_state``) fit on the train split, accuracy on train and test split. The paper reports train and test
accuracy per layer (Fig. 24) and the best layer's accuracy (Fig. 25).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from plasticity import architectures
from plasticity.models import model_device
from plasticity.tokenizer import padding_id


def extract_features(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 16,
    max_length: int = 512,
    *,
    add_special_tokens: bool = True,
) -> np.ndarray:
    """Last-token hidden states of all layers: float32 array ``[n_layers + 1, len(texts), hidden]``.

    Texts longer than ``max_length`` tokens are truncated (keeping the start). The model is run in eval mode
    under ``torch.no_grad()`` on its own device; its train/eval mode is restored afterwards.
    """
    if batch_size < 1 or max_length < 1:
        raise ValueError("batch_size and max_length must be >= 1")
    enc = tokenizer(
        list(texts),
        add_special_tokens=add_special_tokens,
        truncation=True,
        max_length=max_length,
        padding=False,
    )["input_ids"]
    empty = [i for i, ids in enumerate(enc) if len(ids) == 0]
    if empty:
        raise ValueError(f"texts {empty[:5]} tokenize to zero tokens")
    device = model_device(model)
    pad = padding_id(tokenizer)
    n_states = len(architectures.decoder_layers(model)) + 1
    feats = np.zeros((n_states, len(enc), model.config.hidden_size), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(enc), batch_size):
                chunk = enc[start : start + batch_size]
                lengths = torch.tensor([len(x) for x in chunk])
                width = int(lengths.max())
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for r, x in enumerate(chunk):
                    ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
                    mask[r, : len(x)] = 1
                out = architectures.body(model)(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    output_hidden_states=True,
                    use_cache=False,
                )
                hs = out.hidden_states
                if len(hs) != n_states:
                    raise RuntimeError(f"expected {n_states} hidden states, got {len(hs)}")
                rows = torch.arange(len(chunk), device=device)
                last = (lengths - 1).to(device)
                for li, h in enumerate(hs):
                    feats[li, start : start + len(chunk)] = h[rows, last].float().cpu().numpy()
    finally:
        model.train(was_training)
    return feats


def stratified_split(
    labels: Sequence[Any] | np.ndarray, test_size: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_idx, test_idx)`` (sorted int arrays), deterministic given ``seed``."""
    y = np.asarray(labels)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=y)
    return np.sort(tr), np.sort(te)


def probe_layers(
    features: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    train_idx: Sequence[int] | np.ndarray | None = None,
    test_idx: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    *,
    test_size: float = 0.2,
    max_iter: int = 1000,
    C: float = 1.0,
) -> dict[str, Any]:
    """Fit one linear probe per layer on ``features [n_layers, n, dim]`` and score it.

    ``train_idx``/``test_idx`` fix the split; if both are None a stratified split (``test_size``, ``seed``) is
    made. Returns ``{"layers": [{"layer", "train_accuracy", "test_accuracy", "converged"}], "best_layer",
    "best_test_accuracy", "majority_baseline", "majority_class", "classes", "n_train", "n_test", "seed",
    "train_idx", "test_idx"}``. ``majority_baseline`` is the test accuracy of always predicting the most
    frequent training label. ``best_layer`` is the first layer with the highest test accuracy.
    """
    x = np.asarray(features)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"features must be [n_layers, n, dim], got shape {x.shape}")
    y = np.asarray(labels)
    if len(y) != x.shape[1]:
        raise ValueError(f"{len(y)} labels for {x.shape[1]} examples")
    if (train_idx is None) != (test_idx is None):
        raise ValueError("give both train_idx and test_idx, or neither")
    if train_idx is None:
        tr, te = stratified_split(y, test_size, seed)
    else:
        tr, te = np.asarray(train_idx, dtype=int), np.asarray(test_idx, dtype=int)
    if len(tr) == 0 or len(te) == 0:
        raise ValueError("train and test splits must be non-empty")
    if np.intersect1d(tr, te).size:
        raise ValueError("train_idx and test_idx overlap")
    classes, counts = np.unique(y[tr], return_counts=True)
    if len(classes) < 2:
        raise ValueError("training split has a single class")
    majority = classes[int(np.argmax(counts))]

    rows: list[dict[str, Any]] = []
    for li in range(x.shape[0]):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C, random_state=seed))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x[li, tr], y[tr])
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        rows.append(
            {
                "layer": li,
                "train_accuracy": float(np.mean(clf.predict(x[li, tr]) == y[tr])),
                "test_accuracy": float(np.mean(clf.predict(x[li, te]) == y[te])),
                "converged": converged,
            }
        )
    best = max(range(len(rows)), key=lambda i: (rows[i]["test_accuracy"], -i))
    return {
        "layers": rows,
        "best_layer": best,
        "best_test_accuracy": rows[best]["test_accuracy"],
        "majority_baseline": float(np.mean(y[te] == majority)),
        "majority_class": majority.item() if hasattr(majority, "item") else majority,
        "classes": [c.item() if hasattr(c, "item") else c for c in np.unique(y)],
        "n_train": len(tr),
        "n_test": len(te),
        "seed": int(seed),
        "train_idx": [int(i) for i in tr],
        "test_idx": [int(i) for i in te],
    }
