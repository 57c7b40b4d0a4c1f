"""Collaborative-filtering encoders and feature models trained on a domain's interactions.

`base` (the `Encoder` interface, `Interactions`, popularity) · `mf` (matrix factorisation with user/item biases,
BCE on explicit like/dislike labels: CoLLM's setting) · `implicit_mf` (BPR, ALS) · `lightgcn` · `sasrec` · `fit`
(one encoder on a named source, leakage-checked) · `cache` (every fit, keyed by settings, data and code) ·
`files` (safetensors storage) · `evaluate` (sampled and full-catalogue ranks) · `titles` (the titles of a
source's catalogue) · `features` (a logistic regression on like-ratio, the target's like-rate and popularity).
Each encoder also scores cases alone, as a non-LLM row beside the adapters.
"""
