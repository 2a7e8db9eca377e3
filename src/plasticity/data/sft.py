"""Supervised fine-tuning data: (question, response) pairs -> token ids with a prompt-masked label vector,
and deterministic padded batches by step (the data position is the step, as in pretraining)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # -100 on prompt tokens: loss on response tokens (and the closing EOS) only


def prompt_text(template: str, question: str) -> str:
    """The part of the template before ``{response}``, with the question filled in (also the eval prompt)."""
    head = template.split("{response}", 1)[0]
    return head.replace("{question}", question)


def chat_template(template: str, tok) -> str:
    """The fine-tuning `template` as a Jinja chat template for `tok` (saved as the fine-tuned tokenizer's
    ``chat_template``), so that ``tok.apply_chat_template([{"role": "user", "content": q}],
    add_generation_prompt=True)`` gives exactly the prompt text and tokens fine-tuning used (`encode_example`):
    the tokens `tok` adds around a text (a BOS) first, the template up to ``{response}`` with the question filled
    in. An assistant turn continues it with the response and the EOS token, as in training; turns repeat without
    a separator (fine-tuning had one turn). A system message is refused: the template has no place for one."""
    import json

    def lit(text: str) -> str:  # a Jinja string literal (JSON escapes are Jinja's escapes)
        return json.dumps(text, ensure_ascii=False)

    head = template.split("{response}", 1)[0]
    *before, after = head.split("{question}")
    wrap, bare = tok("x", add_special_tokens=True)["input_ids"], tok("x", add_special_tokens=False)["input_ids"]
    start = next((i for i in range(len(wrap) - len(bare) + 1) if wrap[i:i + len(bare)] == bare), 0)
    prefix = "".join(tok.convert_ids_to_tokens(wrap[:start]))
    suffix = "".join(tok.convert_ids_to_tokens(wrap[start + len(bare):]))
    user = " + ".join(f"{lit(b)} + message['content']" for b in before)
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}"
        "{{- raise_exception('this model was fine-tuned without a system prompt') -}}"
        "{%- endif -%}"
        f"{{%- if loop.first -%}}{{{{- {lit(prefix)} -}}}}{{%- endif -%}}"
        f"{{%- if message['role'] == 'user' -%}}{{{{- {user} -}}}}"
        f"{{%- else -%}}{{{{- {lit(after + suffix)} + message['content'] + eos_token -}}}}{{%- endif -%}}"
        "{%- endfor -%}"
        f"{{%- if add_generation_prompt -%}}{{{{- {lit(after + suffix)} -}}}}{{%- endif -%}}"
    )


def encode_example(tok, template: str, question: str, response: str) -> SFTExample:
    """Prompt and response are tokenized separately so the prompt tokens are exactly those the sampler sees
    at evaluation time; the response is followed by EOS."""
    p = tok(prompt_text(template, question), add_special_tokens=True)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return SFTExample(input_ids=p + r, labels=[-100] * len(p) + r)


def encode_all(tok, template: str, pairs: list[tuple[str, str]], cutoff_len: int
               ) -> tuple[list[SFTExample], dict[str, int]]:
    """Encode every pair; examples longer than `cutoff_len` tokens are dropped and counted."""
    out, counts = [], {"encoded": 0, "over_cutoff": 0, "empty_response": 0}
    for q, r in pairs:
        if not r.strip():
            counts["empty_response"] += 1
            continue
        ex = encode_example(tok, template, q, r)
        if len(ex.input_ids) > cutoff_len:
            counts["over_cutoff"] += 1
            continue
        out.append(ex)
        counts["encoded"] += 1
    return out, counts


class SFTBatches:
    """Step s, micro-batch m holds examples perm_epoch[g % n] for g in a contiguous range of the run's
    example stream (a seeded permutation per epoch). Right padding with `pad_id`; labels -100 on padding."""

    def __init__(self, examples: list[SFTExample], micro_batch_size: int, grad_accum: int, seed: int, pad_id: int):
        self.ex, self.bs, self.accum, self.seed, self.pad = examples, micro_batch_size, grad_accum, seed, pad_id
        self._perms: dict[int, np.ndarray] = {}

    @property
    def examples_per_step(self) -> int:
        return self.bs * self.accum

    def steps_for_epochs(self, epochs: float) -> int:
        return max(1, math.ceil(epochs * len(self.ex) / self.examples_per_step))

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.ex))}
        return self._perms[epoch]

    def step_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        n = len(self.ex)
        out = []
        for m in range(self.accum):
            start = (step * self.accum + m) * self.bs
            items = [self.ex[int(self._perm(g // n)[g % n])] for g in range(start, start + self.bs)]
            width = max(len(e.input_ids) for e in items)
            ids = torch.full((len(items), width), self.pad, dtype=torch.long)
            labels = torch.full((len(items), width), -100, dtype=torch.long)
            mask = torch.zeros((len(items), width), dtype=torch.long)
            for i, e in enumerate(items):
                L = len(e.input_ids)
                ids[i, :L] = torch.tensor(e.input_ids)
                labels[i, :L] = torch.tensor(e.labels)
                mask[i, :L] = 1
            out.append({"input_ids": ids, "labels": labels, "attention_mask": mask})
        return out
