"""Adapter types on the tiny Llama: training with the Yes/No loss, AdaLoRA's schedule and state, export, prefix scoring."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from adaptrec.adapters import TUNERS, adalora_to_lora, build_peft_model, parse_adapter_settings, tuner_for
from adaptrec.adapters.adalora import AdaLoraSettings, schedule_steps
from adaptrec.adapters.lora import LoraSettings
from adaptrec.adapters.prefix import PrefixSettings
from adaptrec.backbone import load_backbone
from adaptrec.data.prompts import answer_token_ids
from adaptrec.errors import AdaptrecError, ConfigError
from adaptrec.scoring.logits import last_token_logits, pad_ids, tokenize

CPU = torch.device("cpu")
PROMPTS = [
    "The user liked Alien, Heat and Se7en. Will the user like Toy Story? Answer:",
    "The user liked Titanic. Will the user like The Notebook? Answer:",
    "Liked: Dune, Blade Runner, Arrival, Interstellar. Will the user enjoy Solaris? Answer:",
    "Liked: Cars. Will the user enjoy Saw? Answer:",
    "A reader of Tolkien and Le Guin. Would they like Earthsea? Answer:",
    "A reader of cookbooks. Would they like a thriller? Answer:",
    "Bought running shoes and a watch. Buy socks? Answer:",
    "Bought a kettle. Buy a chainsaw? Answer:",
]
LABELS = torch.tensor([0, 1, 1, 0, 1, 0, 1, 0])
AD_MARKERS = ("lora_", "prompt_encoder")
# (quantization, int8 backend): fp32, bitsandbytes int8, and adaptrec's CPU int8 kernel
LOADS = pytest.mark.parametrize("quantization,backend", [("none", None), ("8bit", "bitsandbytes"), ("8bit", "torch")],
                                ids=["fp32", "bnb-int8", "torch-int8"])


def assert_frozen_int8(model, backend: str) -> None:
    """The decoder's projections hold int8 weights under the chosen backend."""
    import bitsandbytes as bnb

    from adaptrec.int8_cpu import Int8Linear

    q_proj = model.model.layers[0].self_attn.q_proj
    q_proj = getattr(q_proj, "base_layer", q_proj)
    assert isinstance(q_proj, bnb.nn.Linear8bitLt if backend == "bitsandbytes" else Int8Linear)
    assert q_proj.weight.dtype == torch.int8


def rec_loss(model, batch, yes: int, no: int) -> torch.Tensor:
    """The trainer's loss: cross-entropy over the (No, Yes) logits at the answer slot."""
    logits = last_token_logits(model, batch)
    return torch.nn.functional.cross_entropy(torch.stack([logits[:, no], logits[:, yes]], dim=-1), LABELS)


def train(model, tokenizer, steps: int, lr: float, first_step: int = 1, opt=None, on_step=None):
    tuner = tuner_for(model)
    yes, no = answer_token_ids(tokenizer)
    batch = tokenize(tokenizer, PROMPTS, CPU)
    opt = opt or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(first_step, first_step + steps):
        loss = rec_loss(model, batch, yes, no)
        extra = tuner.extra_loss(model)
        (loss + extra if extra is not None else loss).backward()
        opt.step()
        tuner.after_optimizer_step(model, step)
        opt.zero_grad()
        if on_step:
            on_step(step)
    return opt


def eval_loss(model, tokenizer) -> float:
    model.eval()
    yes, no = answer_token_ids(tokenizer)
    with torch.no_grad():
        return rec_loss(model, tokenize(tokenizer, PROMPTS, CPU), yes, no).item()


def base_state(model) -> dict[str, torch.Tensor]:
    """The backbone's own tensors, with peft's wrapping undone (adapter tensors left out)."""
    out = {}
    for k, v in model.state_dict().items():
        if any(m in k for m in (".lora_", ".ranknum.")):
            continue
        out[k.replace(".base_layer.", ".")] = v.detach().clone()
    return out


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def expected_trainable(config, settings) -> int:
    h = config.hidden_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    layers = config.num_hidden_layers
    if settings.type == "lora":  # q: h->h, v: h->kv
        return layers * settings.r * ((h + h) + (h + kv))
    if settings.type == "adalora":  # A, B and E (init_r) per module
        r = settings.init_r
        return layers * (r * (h + h) + r + r * (h + kv) + r)
    return settings.num_virtual_tokens * layers * 2 * kv  # one key and one value vector per layer


SETTINGS = {
    "lora": (LoraSettings(), 2e-2),
    "adalora": (AdaLoraSettings(), 5e-2),
    "prefix": (PrefixSettings(), 1.0),
}


@LOADS
@pytest.mark.parametrize("kind", list(SETTINGS))
def test_training_changes_only_the_adapter(tiny_model_dir, kind, quantization, backend):
    bb = load_backbone(str(tiny_model_dir), quantization=quantization, device="cpu", int8_backend=backend)
    if quantization == "8bit":
        assert_frozen_int8(bb.model, backend)
    settings, lr = SETTINGS[kind]
    before_base = base_state(bb.model)
    model = build_peft_model(bb.model, settings, total_steps=12, tokenizer=bb.tokenizer)
    assert tuner_for(model) is TUNERS[kind]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(any(m in n for m in AD_MARKERS) for n in names)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected_trainable(bb.model.config, settings)

    start = trainable(model)
    loss0 = eval_loss(model, bb.tokenizer)
    train(model, bb.tokenizer, steps=12, lr=lr)
    loss1 = eval_loss(model, bb.tokenizer)
    assert loss1 < loss0 - 0.02, (loss0, loss1)

    after = trainable(model)
    assert all(not torch.equal(start[n], after[n]) for n in after if "lora_E" not in n or kind != "adalora")
    after_base = base_state(model.get_base_model())
    assert after_base.keys() == before_base.keys()
    changed = [k for k in before_base if not torch.equal(before_base[k], after_base[k])]
    assert not changed


@pytest.mark.parametrize("backend", ["bitsandbytes", "torch"])
def test_gradients_reach_every_adapter_through_int8_layers(tiny_model_dir, backend):
    bb = load_backbone(str(tiny_model_dir), quantization="8bit", device="cpu", int8_backend=backend)
    model = build_peft_model(bb.model, LoraSettings(dropout=0.0), total_steps=1)
    model.train()
    yes, no = answer_token_ids(bb.tokenizer)
    # one step so lora_B (zero-initialised) is non-zero and lora_A gets gradients too
    train(model, bb.tokenizer, steps=1, lr=1e-2)
    rec_loss(model, tokenize(bb.tokenizer, PROMPTS, CPU), yes, no).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_bad_settings_raise():
    with pytest.raises(ValidationError):
        LoraSettings(r=0)
    with pytest.raises(ValidationError):
        LoraSettings(rank=4)  # unknown key
    with pytest.raises(ValidationError):
        AdaLoraSettings(init_r=8, target_r=8)
    with pytest.raises(ValidationError):
        AdaLoraSettings(tinit=2.5)
    with pytest.raises(ValidationError):
        PrefixSettings(encoder_hidden_size=64)  # without prefix_projection
    with pytest.raises(ValidationError, match="init: random"):
        PrefixSettings(prefix_projection=True)  # the MLP's output cannot be set to given activations
    for bad, where in [
        ({"type": "lora", "r": 0}, "adapter.r"),
        ({"type": "lora", "alpha": 16, "bogus": 1}, "adapter.bogus"),
        ({"type": "ia3"}, "adapter.type"),
        ({"type": "prefix", "num_virtual_tokens": 0}, "adapter.num_virtual_tokens"),
    ]:
        with pytest.raises(ConfigError, match=where):
            parse_adapter_settings(bad)
    assert parse_adapter_settings({"type": "adalora", "target_r": 4}).target_r == 4


def test_build_refuses_bad_targets_schedules_and_reuse(tiny_backbone):
    with pytest.raises(ConfigError, match="does not fit"):
        build_peft_model(tiny_backbone.model, LoraSettings(target_modules=["nope_proj"]), total_steps=5)
    for settings in (LoraSettings(target_modules=["q_proj", "v_prj"]),
                     AdaLoraSettings(target_modules=["q_proj", "v_prj"])):
        with pytest.raises(ConfigError, match=r"target_modules: 'v_prj' \(did you mean 'v_proj'\?\) matches no module"):
            build_peft_model(tiny_backbone.model, settings, total_steps=5)  # peft trained q_proj alone, unsaid
    with pytest.raises(ConfigError, match="no pruning phase"):
        build_peft_model(tiny_backbone.model, AdaLoraSettings(tinit=3, tfinal=2), total_steps=5)
    with pytest.raises(ConfigError, match="total_steps"):
        build_peft_model(tiny_backbone.model, {"type": "lora"}, total_steps=0)
    build_peft_model(tiny_backbone.model, {"type": "lora"}, total_steps=5)
    with pytest.raises(AdaptrecError, match="already carries adapters"):
        build_peft_model(tiny_backbone.model, {"type": "lora"}, total_steps=5)


@pytest.mark.parametrize("kind", ["lora", "adalora", "prefix"])
def test_a_failed_start_leaves_the_backbone_reusable(tiny_model_dir, monkeypatch, kind):
    """A tuner whose start fails after peft wrapped the backbone takes its layers back out: the backbone scores as
    before and takes another adapter."""
    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        before = bb.model(ids).logits

    def fails(*args, **kwargs):
        raise ConfigError("the start failed")

    monkeypatch.setattr(type(TUNERS[kind]), "initialise", fails)
    with pytest.raises(ConfigError, match="the start failed"):
        build_peft_model(bb.model, {"type": kind}, total_steps=5, tokenizer=bb.tokenizer)
    monkeypatch.undo()
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not hasattr(bb.model, "peft_config")
    assert not any(isinstance(m, BaseTunerLayer) for m in bb.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(bb.model(ids).logits, before)
    build_peft_model(bb.model, {"type": "lora"}, total_steps=5)


def test_adalora_schedule_fractions_and_steps():
    assert schedule_steps(AdaLoraSettings(tinit=0.1, tfinal=0.2, deltaT=0.05), 100) == {"tinit": 10, "tfinal": 20, "deltaT": 5}
    assert schedule_steps(AdaLoraSettings(tinit=3, tfinal=4.0, deltaT=2), 100) == {"tinit": 3, "tfinal": 4, "deltaT": 2}
    assert schedule_steps(AdaLoraSettings(deltaT=0.001), 100)["deltaT"] == 1
    with pytest.raises(ConfigError):
        schedule_steps(AdaLoraSettings(tinit=0.5, tfinal=0.5), 10)


def test_adalora_budget_reaches_target_after_tfinal(tiny_backbone, monkeypatch):
    settings = AdaLoraSettings(init_r=12, target_r=8, tinit=1, tfinal=2, dropout=0.0)
    total = 8
    model = build_peft_model(tiny_backbone.model, settings, total_steps=total)
    config = model.peft_config["default"]
    assert (config.total_step, config.tinit, config.tfinal) == (total, 1, 2)
    calls = []
    real = model.base_model.update_and_allocate
    monkeypatch.setattr(model.base_model, "update_and_allocate", lambda step: (calls.append(step), real(step))[1])
    n_modules = sum(1 for n, _ in model.named_parameters() if "lora_E" in n)
    live_ranks = {}

    def count(step):
        live_ranks[step] = sum(int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n)

    train(model, tiny_backbone.tokenizer, steps=total, lr=2e-2, on_step=count)
    assert calls == list(range(1, total + 1))  # once per optimizer step, 1-based
    budget = settings.target_r * n_modules
    assert live_ranks[1] == settings.init_r * n_modules  # warm-up: nothing pruned
    ranks = [live_ranks[s] for s in range(1, total + 1)]
    assert ranks == sorted(ranks, reverse=True)  # the budget only falls
    for step in range(total - 2, total + 1):  # from total - tfinal on, the budget is the target
        assert live_ranks[step] == budget, live_ranks
    assert sum(sum(mask) for mask in config.rank_pattern.values()) == budget
    assert min(sum(mask) for mask in config.rank_pattern.values()) < settings.init_r  # some module was pruned


def test_adalora_ranks_pruned_between_masks_are_zeroed_before_validation(tiny_backbone):
    """With deltaT 3 AdamW moved pruned singular values off zero between masks, and a save dropped them: the best
    adapter validated was not the one kept (was: up to 7e-4 apart in P(yes))."""
    settings = AdaLoraSettings(init_r=4, target_r=2, tinit=1, tfinal=2, deltaT=3, dropout=0.0)
    model = build_peft_model(tiny_backbone.model, settings, total_steps=12)
    train(model, tiny_backbone.tokenizer, steps=5, lr=2e-2)  # pruned at step 3, trained on through steps 4 and 5
    pattern = model.peft_config["default"].rank_pattern
    assert pattern and not all(all(mask) for mask in pattern.values())

    def pruned() -> list[float]:
        values = {n: p for n, p in model.named_parameters() if "lora_E" in n}
        return [float(values[n].detach().flatten()[i].abs()) for key, mask in pattern.items()
                for n in values if key in n for i, keep in enumerate(mask) if not keep]

    assert max(pruned()) > 0  # moved off zero since the last mask
    TUNERS["adalora"].before_validation(model)
    assert max(pruned()) == 0.0
    TUNERS["lora"].before_validation(model)  # nothing to do for other types


def test_adalora_makes_its_final_budget_cut_when_fp16_skipped_that_step(tiny_backbone):
    """An inf gradient skips an optimizer step, and the loop skips the tuner's call: at `total - tfinal` peft's one-time
    cut to the target budget never ran, and the run kept the larger rank pattern to its end."""
    settings = AdaLoraSettings(init_r=12, target_r=8, tinit=1, tfinal=2, deltaT=4, dropout=0.0)
    model = build_peft_model(tiny_backbone.model, settings, total_steps=8)
    opt = train(model, tiny_backbone.tokenizer, steps=5, lr=2e-2)  # masked at step 4; step 6 (= 8 - 2) is skipped
    tuner, real = TUNERS["adalora"], TUNERS["adalora"].after_optimizer_step
    try:
        tuner.after_optimizer_step = lambda m, step: None if step == 6 else real(m, step)
        train(model, tiny_backbone.tokenizer, steps=2, lr=2e-2, first_step=6, opt=opt)
    finally:
        del tuner.after_optimizer_step
    n_modules = sum(1 for n, _ in model.named_parameters() if "lora_E" in n)
    assert sum(sum(mask) for mask in model.peft_config["default"].rank_pattern.values()) == 8 * n_modules


def test_adalora_step_must_follow_optimizer_step_before_zero_grad(tiny_backbone):
    model = build_peft_model(tiny_backbone.model, AdaLoraSettings(), total_steps=10)
    with pytest.raises(RuntimeError, match="before optimizer.zero_grad"):
        TUNERS["adalora"].after_optimizer_step(model, 1)  # no gradients yet
    with pytest.raises(ValueError, match="from 1"):
        TUNERS["adalora"].after_optimizer_step(model, 0)


def test_adalora_orth_reg_equals_peft(tiny_backbone):
    model = build_peft_model(tiny_backbone.model, AdaLoraSettings(dropout=0.0), total_steps=10)
    train(model, tiny_backbone.tokenizer, steps=2, lr=5e-2)
    model.eval()
    ids = tiny_backbone.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        with_reg = model(input_ids=ids, labels=ids).loss  # peft adds the regulariser only here
        plain = model.base_model.model(input_ids=ids, labels=ids).loss
    extra = TUNERS["adalora"].extra_loss(model)
    assert extra.requires_grad
    assert extra.item() > 0.1
    torch.testing.assert_close(extra.detach(), with_reg - plain, rtol=1e-5, atol=1e-6)
    assert TUNERS["lora"].extra_loss(model) is None
    model0 = build_peft_model(load_backbone(str(tiny_backbone.source), "none", "cpu").model, AdaLoraSettings(orth_reg_weight=0), 10)
    assert TUNERS["adalora"].extra_loss(model0) is None


def _adalora_run(model_dir, tmp_path, resume_at: int | None, restore_state: bool = True):
    """8 AdaLoRA steps, optionally split at `resume_at` through a checkpoint (params, optimizer, tuner state)."""
    settings = AdaLoraSettings(tinit=1, tfinal=2, dropout=0.0)
    bb = load_backbone(str(model_dir), quantization="none", device="cpu")
    torch.manual_seed(0)  # the same adapter initialisation in every run
    model = build_peft_model(bb.model, settings, total_steps=8)
    if resume_at is None:
        train(model, bb.tokenizer, steps=8, lr=2e-2)
        return trainable(model)
    opt = train(model, bb.tokenizer, steps=resume_at, lr=2e-2)
    tuner = tuner_for(model)
    save_file(trainable(model), str(tmp_path / "params.safetensors"))
    state = tuner.state_tensors(model)
    assert state and all(k.split("/")[0] in ("ipt", "exp_avg_ipt", "exp_avg_unc", "rank_pattern") for k in state)
    save_file(state, str(tmp_path / "tuner_state.safetensors"))
    opt_state = opt.state_dict()

    bb2 = load_backbone(str(model_dir), quantization="none", device="cpu")
    model2 = build_peft_model(bb2.model, settings, total_steps=8)
    params = load_file(str(tmp_path / "params.safetensors"))
    with torch.no_grad():
        for n, p in model2.named_parameters():
            if p.requires_grad:
                p.copy_(params[n])
    opt2 = torch.optim.AdamW([p for p in model2.parameters() if p.requires_grad], lr=2e-2)
    opt2.load_state_dict(opt_state)
    if restore_state:
        tuner.load_state_tensors(model2, load_file(str(tmp_path / "tuner_state.safetensors")))
    train(model2, bb2.tokenizer, steps=8 - resume_at, lr=2e-2, first_step=resume_at + 1, opt=opt2)
    return trainable(model2)


def test_adalora_resume_is_exact(tiny_model_dir, tmp_path):
    straight = _adalora_run(tiny_model_dir, tmp_path / "a", None)
    (tmp_path / "b").mkdir()
    resumed = _adalora_run(tiny_model_dir, tmp_path / "b", resume_at=3)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[n], resumed[n]) for n in straight)
    (tmp_path / "c").mkdir()
    forgetful = _adalora_run(tiny_model_dir, tmp_path / "c", resume_at=3, restore_state=False)
    assert not all(torch.equal(straight[n], forgetful[n]) for n in straight)  # the state matters


def test_state_tensors_of_stateless_types(tiny_backbone):
    model = build_peft_model(tiny_backbone.model, LoraSettings(), total_steps=3)
    tuner = tuner_for(model)
    assert tuner.state_tensors(model) == {}
    tuner.load_state_tensors(model, {})
    with pytest.raises(ConfigError, match="another adapter type"):
        tuner.load_state_tensors(model, {"ipt/x": torch.zeros(1)})


@LOADS
def test_adalora_export_to_lora_is_exact(tiny_model_dir, tmp_path, quantization, backend):
    from peft import PeftModel

    settings = AdaLoraSettings(init_r=12, target_r=8, tinit=1, tfinal=2, dropout=0.1)
    bb = load_backbone(str(tiny_model_dir), quantization=quantization, device="cpu", int8_backend=backend)
    model = build_peft_model(bb.model, settings, total_steps=8)
    train(model, bb.tokenizer, steps=8, lr=5e-2)
    model.eval()
    batch = tokenize(bb.tokenizer, PROMPTS, CPU)
    with torch.no_grad():
        ref = last_token_logits(model, batch)
        with model.disable_adapter():
            base = last_token_logits(model, batch)
    assert (ref - base).abs().max() > 1e-3  # the adapter does something

    from_model = adalora_to_lora(model, tmp_path / "from_model")
    model.save_pretrained(str(tmp_path / "ada"), safe_serialization=True)
    from_dir = adalora_to_lora(tmp_path / "ada", tmp_path / "from_dir")
    for out in (from_model, from_dir):
        assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
        cfg = json.loads((out / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA"
        ranks = {m: cfg["rank_pattern"].get(m, cfg["r"]) for m in cfg["target_modules"]}
        assert sum(ranks.values()) == settings.target_r * 4  # the pruned ranks were dropped
        assert min(ranks.values()) < settings.init_r
        lora = PeftModel.from_pretrained(load_backbone(str(tiny_model_dir), quantization, "cpu", backend).model, str(out))
        lora.eval()
        with torch.no_grad():
            got = last_token_logits(lora, batch)
        assert (got - ref).abs().max().item() < 1e-5
    a, b = load_file(str(from_model / "adapter_model.safetensors")), load_file(str(from_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)


def test_export_refuses_non_adalora(tiny_backbone, tmp_path):
    model = build_peft_model(tiny_backbone.model, LoraSettings(), total_steps=3)
    with pytest.raises(AdaptrecError, match="needs an AdaLoRA adapter"):
        adalora_to_lora(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@LOADS
def test_prefix_scoring_is_batch_invariant(tiny_model_dir, quantization, backend):
    """scoring.tokenize's attention mask + position ids work with peft's prefix model (virtual kv in the cache)."""
    bb = load_backbone(str(tiny_model_dir), quantization=quantization, device="cpu", int8_backend=backend)
    model = build_peft_model(bb.model, PrefixSettings(num_virtual_tokens=10, init="random"), total_steps=1)
    with torch.no_grad():
        torch.nn.init.normal_(model.prompt_encoder["default"].embedding.weight, std=1.0)
    model.eval()
    prompts = [PROMPTS[3], PROMPTS[2], PROMPTS[7]]  # different lengths: left padding
    with torch.no_grad():
        batch = tokenize(bb.tokenizer, prompts, CPU)
        assert (batch["attention_mask"] == 0).any()
        together = last_token_logits(model, batch)
        alone = torch.cat([last_token_logits(model, tokenize(bb.tokenizer, [p], CPU)) for p in prompts])
        with model.disable_adapter():
            plain = last_token_logits(model, batch)
    assert (together - plain).abs().max() > 1e-3  # the prefix is attended to
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@LOADS
def test_prefix_text_init_continues_the_backbone_on_init_text(tiny_model_dir, quantization, backend):
    """init: text — a fresh prefix adapter scores each prompt as the backbone scores init_text's first tokens + the prompt."""
    bb = load_backbone(str(tiny_model_dir), quantization=quantization, device="cpu", int8_backend=backend)
    settings = PrefixSettings(num_virtual_tokens=6, init_text="The user rates films; answer Yes or No for the next one.")
    head = bb.tokenizer(settings.init_text).input_ids[:6]
    prompts = [PROMPTS[0], PROMPTS[3], PROMPTS[6]]  # different lengths: left padding on both sides
    with torch.no_grad():
        expected = last_token_logits(bb.model, pad_ids(bb.tokenizer, [head + bb.tokenizer(p).input_ids for p in prompts], CPU))
        plain = last_token_logits(bb.model, tokenize(bb.tokenizer, prompts, CPU))
        model = build_peft_model(bb.model, settings, total_steps=1, tokenizer=bb.tokenizer)
        model.eval()
        got = last_token_logits(model, tokenize(bb.tokenizer, prompts, CPU))
    assert (expected - plain).abs().max() > 1e-2  # the prefix is attended to
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_prefix_text_init_errors(tiny_backbone):
    with pytest.raises(AdaptrecError, match="needs the backbone's tokenizer"):
        build_peft_model(tiny_backbone.model, PrefixSettings(), total_steps=1)
    bb = load_backbone(str(tiny_backbone.source), "none", "cpu")
    with pytest.raises(ConfigError, match=r"adapter.init_text: \d+ tokens, fewer than adapter.num_virtual_tokens \(40\)"):
        build_peft_model(bb.model, PrefixSettings(num_virtual_tokens=40, init_text="Too short."), total_steps=1, tokenizer=bb.tokenizer)
    model = build_peft_model(bb.model, PrefixSettings(num_virtual_tokens=4, init="random"), total_steps=1)
    with pytest.raises(ConfigError, match="does not fit this backbone's key/value cache"):  # a cache unlike peft's layout
        TUNERS["prefix"].initialise(model, PrefixSettings(num_virtual_tokens=5), bb.tokenizer)


def test_a_prefix_adapter_trained_through_its_projection_cannot_warm_start_and_says_why(tiny_model_dir, tmp_path):
    """peft saves the projected prefix (n, layers·2·kv), not the (n, width) embedding the projection MLP reads."""
    from adaptrec.adapters.base import warm_start

    settings = {"type": "prefix", "prefix_projection": True, "init": "random", "num_virtual_tokens": 3}
    trained = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    build_peft_model(trained.model, settings, total_steps=4, tokenizer=trained.tokenizer).save_pretrained(tmp_path)
    fresh = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(fresh.model, settings, total_steps=4, tokenizer=fresh.tokenizer)
    with pytest.raises(ConfigError, match="saves only the projected prefix"):
        warm_start(model, tmp_path, fresh.tokenizer)
