"""Shared set-up of the serving benchmarks: arguments, a throwaway registry of random LoRA adapters, Amazon cases."""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path

import torch

from adaptrec.adapters import build_peft_model
from adaptrec.backbone import EMBEDDED, load_backbone
from adaptrec.data.spec import load_spec
from adaptrec.registry import Registry

QV = {"type": "lora", "r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}
ALL = {"type": "lora", "r": 8, "alpha": 16,
       "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--backbone", default=EMBEDDED, help="embedded:smollm2 (8-bit) or a model folder")
    p.add_argument("--quantization", choices=("8bit", "none"), default="8bit")
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run; numbers are noisy)")
    return p


def throwaway_registry() -> Registry:
    """An empty registry in a temporary folder, removed when the process exits."""
    home = Path(tempfile.mkdtemp(prefix="adaptrec-bench-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return Registry(home)


def backbone_and_registry(args) -> tuple[object, Registry]:
    """The backbone and a `throwaway_registry`."""
    return load_backbone(args.backbone, args.quantization), throwaway_registry()


def random_adapters(backbone, registry: Registry, n: int, settings: dict, prefix: str = "bench") -> list[str]:
    """Register `n` LoRA adapters with seeded random weights on `backbone`; the backbone is left without them."""
    refs = []
    for i in range(n):
        model = build_peft_model(backbone.model, settings, total_steps=10)
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for _, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=gen).to(p.dtype) * 0.02)
        record = registry.register(model, name=f"{prefix}-{i}", domain="office", kind="trained", adapter_type="lora",
                                   adapter_config=None, fingerprint=backbone.fingerprint)
        backbone.model = model.unload()
        refs.append(record.ref)
    return refs


def amazon_cases(n: int, min_history: int = 0, distinct_users: bool = False) -> list:
    """`n` test cases of amazon:office (cross-domain histories: arts + office items), in file order: each user's
    held-out item, then its sampled negative (same history), unless `distinct_users` keeps one case per user."""
    cases = load_spec("amazon:office:test").cases
    if min_history:
        cases = [c for c in cases if len(c.history) >= min_history]
    if distinct_users:
        cases = list({c.user_id: c for c in reversed(cases)}.values())[::-1]
    return cases[:n]
