"""LoRA folders for vLLM: the checker of vLLM's loading rules, and exports (plain LoRA, AdaLoRA) that pass it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from adaptrec.adapters import adalora_to_lora, build_peft_model
from adaptrec.adapters.adalora import AdaLoraSettings
from adaptrec.adapters.vllm import check_vllm_lora, export_vllm_lora, vllm_max_lora_rank
from adaptrec.backbone import load_backbone
from adaptrec.errors import AdaptrecError
from adaptrec.scoring.logits import last_token_logits, tokenize

PROMPTS = ["The user liked Alien and Heat. Will the user like Toy Story? Answer:", "Bought a kettle. Buy saws? Answer:"]
LAYER = "base_model.model.model.layers.0"


def lora_dir(folder: Path, r: int = 2, **config) -> Path:
    """A hand-made peft LoRA folder on q_proj and v_proj of one Llama layer (hidden size 8)."""
    folder.mkdir(parents=True)
    tensors = {}
    for module in ("self_attn.q_proj", "self_attn.v_proj"):
        tensors[f"{LAYER}.{module}.lora_A.weight"] = np.ones((r, 8), dtype=np.float32)
        tensors[f"{LAYER}.{module}.lora_B.weight"] = np.ones((8, r), dtype=np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    base = {"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "target_modules": ["q_proj", "v_proj"], "bias": "none",
            "use_dora": False, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {}}
    (folder / "adapter_config.json").write_text(json.dumps({**base, **config}))
    return folder


def _add_tensor(folder: Path, key: str, shape: tuple[int, ...]) -> None:
    from safetensors.numpy import load_file

    tensors = load_file(str(folder / "adapter_model.safetensors"))
    save_file({**tensors, key: np.zeros(shape, dtype=np.float32)}, str(folder / "adapter_model.safetensors"))


def test_a_plain_lora_folder_passes(tmp_path):
    assert check_vllm_lora(lora_dir(tmp_path / "lora")) == []


@pytest.mark.parametrize("case, problem", [
    ("bias", "bias: "),
    ("use_dora", "use_dora: "),
    ("rank_pattern", "rank_pattern: "),
    ("modules_to_save", "modules_to_save: "),
    ("pickle", "pickle weights: "),
    ("unknown_module", "target module: "),
    ("dora_magnitude", "tensor name: "),
    ("rank_over_max", "r: "),
    ("adalora", "peft_type: "),
    ("alora", "alora_invocation_tokens: activated LoRA applies only after"),  # (was: passed; an always-on adapter)
    ("qalora", "use_qalora: "),
])
def test_bad_folders_fail_with_a_named_problem(tmp_path, case, problem):
    """Each rule of vLLM's loader that a folder breaks is reported under its own name."""
    config = {"bias": {"bias": "all"}, "use_dora": {"use_dora": True}, "rank_pattern": {"rank_pattern": {"q_proj": 1}},
              "modules_to_save": {"modules_to_save": ["lm_head"]}, "adalora": {"peft_type": "ADALORA"},
              "alora": {"alora_invocation_tokens": [5, 6]}, "qalora": {"use_qalora": True}}.get(case, {})
    folder = lora_dir(tmp_path / case, r=2 if case != "rank_over_max" else 20, **config)
    if case == "pickle":
        torch.save({}, folder / "adapter_model.bin")
    elif case == "unknown_module":
        _add_tensor(folder, f"{LAYER}.self_attn.rotary.lora_A.weight", (2, 8))
        _add_tensor(folder, f"{LAYER}.self_attn.rotary.lora_B.weight", (8, 2))
    elif case == "dora_magnitude":
        _add_tensor(folder, f"{LAYER}.self_attn.q_proj.lora_magnitude_vector", (8,))
    problems = check_vllm_lora(folder, max_lora_rank=16)
    assert any(p.startswith(problem) for p in problems), problems


def test_missing_and_unreadable_files_are_problems(tmp_path):
    folder = lora_dir(tmp_path / "lora")
    (folder / "adapter_model.safetensors").write_bytes(b"not safetensors")
    assert [p.split(":")[0] for p in check_vllm_lora(folder)] == ["unreadable"]
    (folder / "adapter_model.safetensors").unlink()
    assert check_vllm_lora(folder) == ["missing file: adapter_model.safetensors"]
    assert check_vllm_lora(tmp_path / "nowhere") == [f"missing folder: {tmp_path / 'nowhere'}"]


def test_max_lora_rank_is_the_smallest_value_vllm_takes():
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 9, 300, 512)] == [1, 8, 8, 16, 320, 512]
    with pytest.raises(AdaptrecError, match="largest"):
        vllm_max_lora_rank(513)


def test_a_plain_lora_is_copied_byte_for_byte(tmp_path):
    src = lora_dir(tmp_path / "lora", r=4)
    (src / "adaptrec.json").write_text("{}")
    result = export_vllm_lora(src, "lora", tmp_path / "out")
    assert sorted(p.name for p in result.path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (result.path / name).read_bytes() == (src / name).read_bytes()
    assert (result.rank, result.max_lora_rank) == (4, 8)


@pytest.mark.parametrize("adapter_type, reason", [("prefix", "prefix-tuning"), ("collab", "item tokens"),
                                                  ("mix", "score-level mix"), ("ia3", "ia3 adapter")])
def test_other_adapter_types_are_refused_in_one_line(tmp_path, adapter_type, reason):
    with pytest.raises(AdaptrecError, match=reason) as e:
        export_vllm_lora(lora_dir(tmp_path / "src"), adapter_type, tmp_path / "out", label="movie:1")
    assert "\n" not in str(e.value) and "movie:1" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_an_export_under_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")  # was: errno 17, exit 1
    with pytest.raises(AdaptrecError, match=f"{tmp_path / 'file'} is a file, so no folder can be made there"):
        export_vllm_lora(lora_dir(tmp_path / "src"), "lora", tmp_path / "file" / "out", label="movie:1")


def test_a_folder_vllm_would_refuse_is_not_written(tmp_path):
    with pytest.raises(AdaptrecError, match="vLLM would not load movie:1: bias: "):
        export_vllm_lora(lora_dir(tmp_path / "src", bias="lora_only"), "lora", tmp_path / "out", label="movie:1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no temporary folder left either


def _adalora_folder(tiny_model_dir: Path, folder: Path):
    """A saved AdaLoRA adapter with random weights whose modules keep different numbers of ranks; its model."""
    backbone = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(backbone.model, AdaLoraSettings(init_r=6, target_r=4, tinit=1, tfinal=1), total_steps=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        kept = 0
        for name, p in model.named_parameters():
            if "lora_E" in name:
                p[kept + 1:] = 0  # module i keeps i + 1 ranks (at most init_r)
                kept = min(kept + 1, p.shape[0] - 1)
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    return model, backbone.tokenizer


def test_an_adalora_export_passes_and_computes_the_same_function(tiny_model_dir, tmp_path):
    """The exact LoRA export's per-module ranks (rank_pattern) are folded into one zero-padded rank, exactly."""
    from peft import PeftModel

    ada, tokenizer = _adalora_folder(tiny_model_dir, tmp_path / "ada")
    plain = adalora_to_lora(tmp_path / "ada", tmp_path / "plain")
    assert any(p.startswith("rank_pattern: ") for p in check_vllm_lora(plain))  # why the folding is needed
    result = export_vllm_lora(tmp_path / "ada", "adalora", tmp_path / "vllm")
    assert check_vllm_lora(result.path) == []
    config = json.loads((result.path / "adapter_config.json").read_text())
    assert config["rank_pattern"] == {} and config["alpha_pattern"] == {} and config["r"] == result.rank
    batch = tokenize(tokenizer, PROMPTS, torch.device("cpu"))
    lora = PeftModel.from_pretrained(load_backbone(str(tiny_model_dir), "none", "cpu").model, str(result.path)).eval()
    with torch.no_grad():
        ref, got = last_token_logits(ada, batch), last_token_logits(lora, batch)
        with ada.disable_adapter():
            assert (ref - last_token_logits(ada, batch)).abs().max() > 1e-3  # the adapter does something
    assert (got - ref).abs().max().item() < 1e-5


def test_per_module_ranks_and_alphas_fold_into_one_rank_exactly(tiny_model_dir, tmp_path):
    """A LoRA with rank_pattern/alpha_pattern (other scales per module) becomes one rank, same logits."""
    from peft import LoraConfig, PeftModel, get_peft_model

    backbone = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], rank_pattern={"v_proj": 2},
                        alpha_pattern={"v_proj": 7, "layers.1.self_attn.q_proj": 3})
    model = get_peft_model(backbone.model, config)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.eval().save_pretrained(str(tmp_path / "lora"), safe_serialization=True)
    result = export_vllm_lora(tmp_path / "lora", "lora", tmp_path / "vllm")
    assert check_vllm_lora(result.path) == [] and result.rank == 4
    batch = tokenize(backbone.tokenizer, PROMPTS, torch.device("cpu"))
    folded = PeftModel.from_pretrained(load_backbone(str(tiny_model_dir), "none", "cpu").model, str(result.path)).eval()
    with torch.no_grad():
        assert (last_token_logits(folded, batch) - last_token_logits(model, batch)).abs().max().item() < 1e-5


def test_folding_reads_peft_defaults_and_refuses_a_rank_that_is_no_number(tiny_model_dir, tmp_path):
    """A config without `lora_alpha` (peft's default, 8) gave a KeyError traceback, a rank written as text a
    TypeError."""
    from peft import LoraConfig, get_peft_model

    backbone = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = get_peft_model(backbone.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      rank_pattern={"v_proj": 2}))
    model.save_pretrained(str(tmp_path / "lora"), safe_serialization=True)
    config_path = tmp_path / "lora" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({k: v for k, v in config.items() if k != "lora_alpha"}))
    assert export_vllm_lora(tmp_path / "lora", "lora", tmp_path / "vllm").rank == 4
    config_path.write_text(json.dumps({**config, "rank_pattern": {"v_proj": "2"}}))
    with pytest.raises(AdaptrecError, match="gives .*v_proj the rank '2'; expected a positive number"):
        export_vllm_lora(tmp_path / "lora", "lora", tmp_path / "vllm2")
    assert not (tmp_path / "vllm2").exists()
