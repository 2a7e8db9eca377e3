"""Last-token feature extraction and per-layer linear probes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plasticity.analysis.probes import extract_features, probe_layers, stratified_split

TEXTS = [
    "the cat sat",
    "a dog ran in the park today",
    "stocks fell",
    "this movie was wonderful and moving and long",
    "rain",
]


def test_extract_features_shape_and_padding(tokenizer, tiny_model):
    feats = extract_features(tiny_model, tokenizer, TEXTS, batch_size=3, max_length=32)
    assert feats.shape == (3, len(TEXTS), 64) and feats.dtype == np.float32
    # Right padding inside a batch must not change any text's last-token features.
    for i, text in enumerate(TEXTS):
        alone = extract_features(tiny_model, tokenizer, [text], batch_size=1, max_length=32)
        np.testing.assert_allclose(feats[:, i], alone[:, 0], rtol=1e-4, atol=1e-5)


def test_feature_layers_match_model(tokenizer, llama):
    """Index 0 = embeddings, 1..L-1 = block outputs (pre-norm), last = final-normed last block output."""
    text = TEXTS[1]
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    outs: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(lambda _m, _a, o: outs.append(o[0] if isinstance(o, tuple) else o))
        for layer in llama.model.layers
    ]
    with torch.no_grad():
        base = llama.model(input_ids=ids)
    for h in hooks:
        h.remove()
    feats = extract_features(llama, tokenizer, [text], batch_size=1, max_length=64)
    emb = llama.model.embed_tokens(ids)[0, -1]
    np.testing.assert_allclose(feats[0, 0], emb.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[1, 0], outs[0][0, -1].numpy(), rtol=1e-5, atol=1e-5)
    post = llama.model.norm(outs[1])[0, -1]
    np.testing.assert_allclose(feats[2, 0], post.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(feats[2, 0], base.last_hidden_state[0, -1].numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(feats[2, 0], outs[1][0, -1].numpy(), atol=1e-3)  # really post-norm


def test_extract_truncates_and_restores_mode(tokenizer, llama):
    llama.train()
    short = extract_features(llama, tokenizer, [TEXTS[3]], max_length=3)
    ids = tokenizer(TEXTS[3])["input_ids"][:3]
    with torch.no_grad():
        ref = llama.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    np.testing.assert_allclose(short[-1, 0], ref.numpy(), rtol=1e-5, atol=1e-5)
    assert llama.training
    with pytest.raises(ValueError):
        extract_features(llama, tokenizer, [""])


def _synthetic(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    noise = rng.normal(size=(n, 8))
    separable = noise.copy()
    separable[:, 0] += np.where(y == 1, 4.0, -4.0)
    feats = np.stack([rng.normal(size=(n, 8)), separable, rng.normal(size=(n, 8))]).astype(np.float32)
    return feats, y


def test_probe_separable_vs_chance():
    feats, y = _synthetic()
    tr, te = stratified_split(y, 0.25, seed=0)
    res = probe_layers(feats, y, tr, te, seed=0)
    accs = [r["test_accuracy"] for r in res["layers"]]
    assert accs[1] >= 0.97 and res["best_layer"] == 1 and res["best_test_accuracy"] == accs[1]
    assert abs(accs[0] - 0.5) < 0.15 and abs(accs[2] - 0.5) < 0.15
    assert res["n_train"] == 300 and res["n_test"] == 100 and res["classes"] == [0, 1]
    assert 0.4 <= res["majority_baseline"] <= 0.6
    assert res == probe_layers(feats, y, tr, te, seed=0)  # deterministic
    json.dumps(res, allow_nan=False)


def test_probe_random_labels_at_chance():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(2, 400, 16))
    y = rng.integers(0, 4, 400)  # 4 classes, labels independent of features
    res = probe_layers(feats, y, seed=3)  # stratified split made internally
    for r in res["layers"]:
        assert abs(r["test_accuracy"] - 0.25) < 0.12
    assert res["n_test"] == 80 and len(res["classes"]) == 4


def test_majority_baseline_and_validation():
    rng = np.random.default_rng(2)
    y = np.array([0] * 70 + [1] * 30)
    feats = rng.normal(size=(1, 100, 4))
    tr, te = np.arange(0, 100, 2), np.arange(1, 100, 2)
    res = probe_layers(feats, y, tr, te)
    assert res["majority_class"] == 0
    assert res["majority_baseline"] == pytest.approx(np.mean(y[te] == 0))
    with pytest.raises(ValueError):
        probe_layers(feats, y, tr, tr)
    with pytest.raises(ValueError):
        probe_layers(feats, y, tr, None)
    with pytest.raises(ValueError):
        probe_layers(feats, y[:50], tr, te)


def test_stratified_split_is_stratified_and_seeded():
    y = np.array([0] * 60 + [1] * 40)
    tr, te = stratified_split(y, 0.2, seed=5)
    assert len(te) == 20 and np.sum(y[te] == 1) == 8
    assert np.intersect1d(tr, te).size == 0 and len(tr) + len(te) == 100
    tr2, te2 = stratified_split(y, 0.2, seed=5)
    assert np.array_equal(te, te2) and not np.array_equal(te, stratified_split(y, 0.2, seed=6)[1])


def test_end_to_end_tiny_model(tokenizer, llama):
    texts = [f"good {w} day" for w in ("nice", "fine", "great", "happy")] * 3
    texts += [f"bad {w} night" for w in ("sad", "awful", "grim", "cold")] * 3
    y = np.array([1] * 12 + [0] * 12)
    feats = extract_features(llama, tokenizer, texts, batch_size=8, max_length=16)
    res = probe_layers(feats, y, seed=0, test_size=0.25)
    assert len(res["layers"]) == 3 and 0 <= res["best_layer"] < 3
