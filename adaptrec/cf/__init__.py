"""Collaborative-filtering encoders and feature models trained on a domain's interactions.

`mf` (matrix factorisation with user/item biases, BCE on explicit like/dislike labels: CoLLM's
setting) · `features` (a logistic regression on like-ratio, the target's like-rate and popularity).
Each also scores cases alone, as a non-LLM row beside the adapters.
"""
