"""Evaluation of fine-tuned models: batched KV-cache sampling, CoT metrics (Greedy, Maj@k, RM@k, Pass@k,
correct ratio, ORM score; paper Section 3) and lm-eval-style cloze log-likelihood accuracy (Appendix C.3)."""
