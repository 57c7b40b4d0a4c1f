"""The CPU int8 backend: accuracy of one layer, row independence, input gradients, peft wrapping, backend choice."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import Linear as LoraLinear

from adaptrec.backbone import INT8_BACKEND_ENV, load_backbone, resolve_backend
from adaptrec.errors import BackboneError
from adaptrec.int8_cpu import Int8Linear, quantize_linears


@pytest.fixture()
def layer_pair() -> tuple[torch.nn.Linear, Int8Linear]:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    return linear, Int8Linear(linear)


def test_int8_linear_is_close_to_fp32_and_stores_int8(layer_pair):
    linear, q = layer_pair
    assert q.weight.dtype == torch.int8 and q.weight.shape == linear.weight.shape
    assert not any(True for _ in q.parameters())  # frozen: buffers only
    x = torch.randn(3, 5, 64)
    ref, got = linear(x), q(x)
    assert got.shape == ref.shape
    rel = (got - ref).norm() / ref.norm()
    assert 1e-5 < rel < 0.02  # really quantized, and close


def test_each_row_is_quantized_on_its_own(layer_pair):
    """Per-token activation scales: a row's output never depends on the other rows (batch-mates, padding)."""
    _, q = layer_pair
    x = torch.randn(6, 64)
    x[2] *= 1000  # an outlier token would wreck a per-tensor scale for every row
    together = q(x)
    alone = torch.cat([q(x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, atol=0, rtol=0)


def test_input_gradient_uses_the_dequantized_weight(layer_pair):
    _, q = layer_pair
    x = torch.randn(4, 64, requires_grad=True)
    g = torch.randn(4, 48)
    (q(x) * g).sum().backward()
    torch.testing.assert_close(x.grad, g @ q.dequantized_weight())


def test_peft_lora_wraps_int8_linears_and_trains_only_the_adapter():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2), torch.nn.LayerNorm(2))
    assert quantize_linears(model, skip=()) == 2
    model.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["0", "2"]))
    assert isinstance(peft_model.base_model.model[0], LoraLinear)
    assert isinstance(peft_model.base_model.model[0].base_layer, Int8Linear)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    x, y = torch.randn(32, 16), torch.randint(0, 2, (32,))
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(peft_model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    after = peft_model.get_base_model().state_dict()
    for k, v in before.items():
        key = next(a for a in after if a.replace(".base_layer", "") == k)
        assert torch.equal(after[key], v), k


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(INT8_BACKEND_ENV, raising=False)
    assert resolve_backend("8bit", "cpu") == "torch-int8"
    assert resolve_backend("8bit", "cuda") == "bitsandbytes"
    assert resolve_backend("8bit", "cpu", "bitsandbytes") == "bitsandbytes"
    assert resolve_backend("4bit", "cpu") == "bitsandbytes"
    assert resolve_backend("none", "cpu") == "fp32" and resolve_backend("none", "cuda:0") == "bf16"
    monkeypatch.setenv(INT8_BACKEND_ENV, "bitsandbytes")
    assert resolve_backend("8bit", "cpu") == "bitsandbytes"
    monkeypatch.setenv(INT8_BACKEND_ENV, "fbgemm")
    with pytest.raises(BackboneError, match="int8 backend 'fbgemm'"):
        resolve_backend("8bit", "cpu")
    with pytest.raises(BackboneError, match="CPU only"):
        resolve_backend("8bit", "cuda", "torch")
    monkeypatch.delenv(INT8_BACKEND_ENV)
    with pytest.raises(BackboneError, match="CPU only, not mps"):  # refused at load, not at the first forward
        resolve_backend("8bit", "mps")


def test_8bit_load_on_cpu_uses_int8_linears_and_keeps_the_fingerprint(tiny_model_dir, monkeypatch):
    monkeypatch.delenv(INT8_BACKEND_ENV, raising=False)
    fast = load_backbone(str(tiny_model_dir), "8bit", device="cpu")
    bnb = load_backbone(str(tiny_model_dir), "8bit", device="cpu", int8_backend="bitsandbytes")
    assert fast.backend == "torch-int8" and bnb.backend == "bitsandbytes"
    layer = fast.model.model.layers[0]
    assert all(isinstance(m, Int8Linear) for m in (layer.self_attn.q_proj, layer.mlp.down_proj))
    assert type(fast.model.lm_head) is torch.nn.Linear  # the output embedding stays fp32
    # one quantization of the same weights (rounded a few codes apart), so adapters move between backends; scores
    # are cached apart
    assert fast.fingerprint == bnb.fingerprint
    assert fast.score_key != bnb.score_key


def test_a_dora_adapter_is_refused_on_the_int8_kernel(tiny_model_dir, tmp_path):
    """DoRA's weight norm reads the base weight, which the int8 kernel keeps as raw codes (was: 0.27 off in logits)."""
    from adaptrec.adapters.attach import attach, detach
    from adaptrec.errors import AdaptrecError
    from adaptrec.registry import Registry

    fp32 = load_backbone(str(tiny_model_dir), "none", device="cpu")
    registry = Registry(tmp_path / "home")
    model = get_peft_model(fp32.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True))
    registry.register(model, name="dora", domain="movie", kind="trained", adapter_type="lora", adapter_config=None,
                      fingerprint=fp32.fingerprint)
    model.unload()
    detach(attach(load_backbone(str(tiny_model_dir), "none", device="cpu"), registry, ["dora"])[0])
    int8 = load_backbone(str(tiny_model_dir), "8bit", device="cpu")
    with pytest.raises(AdaptrecError, match="DoRA adapter.*quantization='none'"):
        attach(int8, registry, ["dora"])


def test_a_gpt2_style_model_is_refused_by_the_int8_kernel_instead_of_running_in_fp32(tiny_model_dir, tmp_path,
                                                                                        monkeypatch):
    """GPT-2's projections are `Conv1D`, not `nn.Linear`: the kernel quantized nothing and the model ran in fp32
    under an 8-bit label (and fingerprint)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from adaptrec.errors import BackboneError

    monkeypatch.delenv(INT8_BACKEND_ENV, raising=False)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=64)).save_pretrained(
        tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    with pytest.raises(BackboneError, match=r"Conv1D projections \(GPT-2 style, e.g. transformer.h.0.attn.c_attn\)"):
        load_backbone(str(tmp_path), "8bit", device="cpu")
    assert load_backbone(str(tmp_path), "none", device="cpu").backend == "fp32"


def test_a_mixture_of_experts_is_refused_by_the_int8_kernel_instead_of_keeping_its_experts_in_fp32(tiny_model_dir,
                                                                                                   tmp_path,
                                                                                                   monkeypatch):
    """transformers fuses a MoE's experts into 3-D parameters, not nn.Linear: the kernel quantized the attention and
    the router and left the experts, most of the weights, in fp32 under an 8-bit label."""
    from transformers import AutoTokenizer, MixtralConfig, MixtralForCausalLM

    from adaptrec.errors import BackboneError

    monkeypatch.delenv(INT8_BACKEND_ENV, raising=False)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = MixtralConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=512, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=4, num_experts_per_tok=1,
                           max_position_embeddings=64)  # the experts: 60% of the weight matrices
    MixtralForCausalLM(config).save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    with pytest.raises(BackboneError, match=r"\d+% of its weight matrices lie outside linear layers \(e.g. model.layers.0.mlp"):
        load_backbone(str(tmp_path), "8bit", device="cpu")
    assert load_backbone(str(tmp_path), "none", device="cpu").backend == "fp32"
    # a small matrix outside linear layers (a vision tower's patch embedding, a projection) stays, as the share says
    from torch import nn

    from adaptrec.int8_cpu import quantize_linears

    class Projection(nn.Module):
        def __init__(self, *shape):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(*shape))

    assert quantize_linears(nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64), Projection(8, 64))) == 2
    with pytest.raises(ValueError, match="lie outside linear layers"):
        quantize_linears(nn.Sequential(nn.Linear(64, 64), Projection(4, 64, 64)))
