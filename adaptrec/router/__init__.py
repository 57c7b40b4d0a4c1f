"""The router: which adapters serve a request, combined how and with what weights, and why.

`compose` (ΔW merging via peft, score-level mixing), `weights` (gradient-free weight search),
`policy` (domain routing, warm/cold decision with a reason), `retrieval` (MiniLM candidates).
See docs/router.md.
"""
