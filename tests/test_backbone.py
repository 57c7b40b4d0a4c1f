"""Backbone loading and fingerprints on the tiny model."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoConfig, LlamaForCausalLM

from adaptrec.backbone import load_backbone
from adaptrec.errors import BackboneError


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


def test_bad_backbone_names_are_one_line_errors(tmp_path):
    with pytest.raises(BackboneError, match="no such folder"):
        load_backbone(str(tmp_path / "missing" / "model.gguf"))
    with pytest.raises(BackboneError, match="quantization"):
        load_backbone(str(tmp_path), quantization="3bit")


def test_empty_backbone_name_is_refused():
    with pytest.raises(BackboneError, match="empty"):
        load_backbone("  ")
