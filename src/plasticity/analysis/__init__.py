"""Mechanistic analyses of pretrained checkpoints (paper Section 5, Appendix F).

Pure computations on Hugging Face causal LMs of the families in `plasticity.architectures` (Llama, OLMo-2,
Mistral, Qwen2, Qwen3, GPT-NeoX; own or external):

* :mod:`~plasticity.analysis.rank` -- attention pseudo-rank of per-head ``W_QK`` and ``W_VP`` (5.2, F.2.1);
* :mod:`~plasticity.analysis.norms` -- parameter L2 norms per layer group and their share (F.3);
* :mod:`~plasticity.analysis.probes` -- last-token linear probes on every layer (5.1, F.1);
* :mod:`~plasticity.analysis.gap` -- train-val (and seen/unseen) loss gap (5.3, eq. 3);
* :mod:`~plasticity.analysis.stats` -- correlations, leave-one-out stability (Fig. 10), seed bootstrap CIs.

Every function returns plain JSON-serialisable ``dict``/``list`` values (Python floats/ints).
"""
