"""Collaborative-filtering encoders and feature models trained on a domain's interactions.

`base` (the `Encoder` interface, `Interactions`, popularity) · `mf` (matrix factorisation with user/item biases,
BCE on explicit like/dislike labels: CoLLM's setting) · `implicit_mf` (BPR, ALS) · `lightgcn` · `sasrec` · `fit`
(one encoder on a named source, leakage-checked) · `cache` (every fit, keyed by settings, data and code) ·
`files` (safetensors storage) · `evaluate` (sampled and full-catalogue ranks) · `titles` (the titles of a
source's catalogue) · `features` (a logistic regression on like-ratio, the target's like-rate and popularity).
Each encoder also scores cases alone, as a non-LLM row beside the adapters.
"""


def unfit_pairing(kind: str, source: str) -> str | None:
    """Why encoder `kind` cannot learn what `source` holds (refused before anything is fitted or loaded), or None."""
    if kind == "mf-bias" and source == "amazon":
        return ("mf-bias learns like/dislike labels, and amazon holds implicit interactions only (every one a like): "
                "use bpr, als, lightgcn or sasrec")
    if kind == "sasrec" and source == "movielens:100k":
        return ("sasrec reads a history in time order, and movielens:100k's cases list every liked item before every "
                "disliked one: use movielens:100k:loo")
    return None
