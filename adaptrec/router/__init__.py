"""The router: which adapters serve a request, combined how and with what weights, and why.

`policy` (domain routing, warm/cold decision with a reason), `sources` (the adapters a command names, resolved on
the registry alone), `weights` (gradient-free weight search
for a composition), `retrieval` (MiniLM candidates). The compositions themselves (ΔW merges, `mix`
entries) live in `adapters.merge`; their scores come from `scoring.variants`.
See docs/router.md.
"""
