"""The one scoring path: prompts -> answer logits -> P(yes) and candidate rankings, batched and cached.

`logits` (tensor functions) · `prefix` (shared-prefix ranking) · `core` (`Scorer`, the cache-then-forward
loop) · `variants` (which model scores each registered adapter, score-level mixes).
"""
