"""Helpers for the router tests: registered adapters with random (non-zero) weights on the tiny Llama."""

from __future__ import annotations

import torch

from adaptrec.adapters import build_peft_model
from adaptrec.backbone import load_backbone


def device_atol(cpu_atol: float) -> float:
    """Tolerance against a `fresh_backbone` reference for code that picks its own device (bf16 on CUDA)."""
    return 2e-3 if torch.cuda.is_available() else cpu_atol


def fresh_backbone(model_dir, quantization: str = "none"):
    return load_backbone(str(model_dir), quantization=quantization, device="cpu")


def tiny_gemma(tokenizer_dir, window: int, out=None):
    """A tiny random Gemma-3 (one sliding-window layer of `window` tokens, one full-attention layer) in eval mode
    over `tokenizer_dir`'s tokenizer (left padding, as `load_backbone` sets it), and that tokenizer; both saved to
    the folder `out` when given."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.padding_side = "left"
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=window, layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tok.pad_token_id, max_position_embeddings=1024)).eval()
    if out is not None:
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    return model, tok


def _random(model, seed: int, std: float):
    """`model` with every trainable parameter seeded noise of scale `std`."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def register_random(model_dir, registry, name: str, settings: dict, seed: int, domain: str = "arts", std: float = 0.3,
                    quantization: str = "none", recipe_text: str | None = None):
    """Train nothing: fill a fresh adapter's parameters with seeded noise and register it (with `recipe_text`, as
    if trained from that recipe)."""
    backbone = fresh_backbone(model_dir, quantization)
    model = _random(build_peft_model(backbone.model, settings, total_steps=10, tokenizer=backbone.tokenizer), seed, std)
    return registry.register(model, name=name, domain=domain, kind="trained", adapter_type=settings["type"],
                             adapter_config=None, fingerprint=backbone.fingerprint, recipe_text=recipe_text)


def register_peft(model_dir, registry, name: str, seed: int, domain: str = "arts", **lora):
    """A random LoRA on q/v built with peft's own options (rsLoRA, DoRA, rank and alpha patterns: a pulled adapter
    may carry any of them), registered."""
    from peft import LoraConfig, get_peft_model

    backbone = fresh_backbone(model_dir)
    config = LoraConfig(**{"target_modules": ["q_proj", "v_proj"], **lora})
    model = _random(get_peft_model(backbone.model, config), seed, 0.3)
    return registry.register(model, name=name, domain=domain, kind="trained", adapter_type="lora", adapter_config=None,
                             fingerprint=backbone.fingerprint)
