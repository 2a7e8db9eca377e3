"""Tokenizers: an existing HF tokenizer (local dir or Hub id) or a byte-level BPE trained on the corpus."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from plasticity.checkpoints import TOKENIZER_FILES, hub_snapshot
from plasticity.errors import CheckpointError, ConfigError

EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train a byte-level BPE (GPT-2 style pre-tokenizer) and save it as an HF fast tokenizer in `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=None, model_max_length=1_000_000)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(name_or_path: str | Path, revision: str | None = None, trust_remote_code: bool = False):
    """Load an HF tokenizer from a local directory or the Hub; ensures a pad token exists (pad = eos)."""
    from transformers import AutoTokenizer

    p = Path(name_or_path)
    if not p.exists() and (str(name_or_path).startswith((".", "/")) or p.suffix):
        raise ConfigError("tokenizer.name", f"tokenizer directory not found: {name_or_path}")
    try:
        local = str(name_or_path) if p.exists() else hub_snapshot(str(name_or_path), revision, TOKENIZER_FILES)
        tok = AutoTokenizer.from_pretrained(local, revision=None,  # a local dir: the Hub revision is fetched
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, CheckpointError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError("tokenizer.name", f"cannot load tokenizer '{name_or_path}': {first}") from None
    if tok.eos_token is None:
        raise ConfigError("tokenizer.name", f"tokenizer '{name_or_path}' has no EOS token")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def padding_id(tokenizer) -> int:
    """The id that fills padded positions: the tokenizer's pad token, else its EOS (the Hugging Face convention),
    else UNK, else 0. Padded positions are masked (or lie after the last real token) and never read, so any
    id in the vocabulary works; the fallbacks only make sure there is one."""
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def tokenizer_fingerprint(tok) -> str:
    """A stable hash of a tokenizer's vocabulary and rules (keys data caches)."""
    try:
        payload = tok.backend_tokenizer.to_str()
    except AttributeError:
        payload = json.dumps(sorted(tok.get_vocab().items()))
    extra = json.dumps([tok.eos_token, tok.pad_token, tok.bos_token])
    return hashlib.sha256((payload + extra).encode()).hexdigest()[:16]
