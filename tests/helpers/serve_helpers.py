"""Shared setup of the serving tests: a registry of random adapters (LoRA ×2, AdaLoRA, prefix) on the tiny Llama."""

from __future__ import annotations

from dataclasses import replace

from router_helpers import register_random

from adaptrec.data.records import Case, HistoryItem
from adaptrec.registry import Registry

ADAPTERS = {
    "arts-lora": ({"type": "lora", "r": 4}, "arts"),
    "office-lora": ({"type": "lora", "r": 2, "target_modules": ["q_proj", "v_proj", "o_proj"]}, "office"),
    "ada": ({"type": "adalora", "init_r": 4, "target_r": 2}, "arts"),
    "pre": ({"type": "prefix", "num_virtual_tokens": 3}, "arts"),
}


def make_registry(model_dir, home, quantization: str = "none") -> Registry:
    registry = Registry(home)
    for seed, (name, (settings, domain)) in enumerate(ADAPTERS.items(), start=1):
        register_random(model_dir, registry, name, settings, seed=seed, domain=domain, std=0.3 if name == "pre" else 0.6,
                        quantization=quantization)
        if name.endswith("-lora"):
            registry.promote(name, domain)
    return registry


def user_case(n_history: int = 6, domain: str = "arts") -> Case:
    titles = [f'"Item {i} ({1990 + i})"' for i in range(n_history)]
    history = tuple(HistoryItem(t, liked=i % 3 != 0, domain=domain) for i, t in enumerate(titles))
    return Case("u1", domain, "arts product", history, '"Target"')


def candidates(case: Case, n: int) -> list[Case]:
    return [replace(case, target=f'"Candidate {k}"') for k in range(n)]
