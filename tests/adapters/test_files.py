"""Adapter folders on disk: atomic writes, sha256 verification, pickle refusal, base fingerprint checks."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from adaptrec.adapters import files
from adaptrec.adapters.files import (
    FamilyMatchWarning,
    check_base,
    file_sha256,
    read_metadata,
    verify_adapter_dir,
    write_adapter_dir,
)
from adaptrec.errors import AdaptrecError, FingerprintMismatch, IntegrityError
from adaptrec.fingerprint import Fingerprint

FP = Fingerprint(exact="e" * 64, family="f" * 64, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")


def make_peft_dir(folder: Path, fill: float = 1.0) -> Path:
    """A fake peft adapter folder: one tiny safetensors file and a JSON config."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"base_model.model.q_proj.lora_A.weight": np.full((2, 8), fill, dtype=np.float32),
         "base_model.model.q_proj.lora_B.weight": np.zeros((8, 2), dtype=np.float32)},
        str(folder / "adapter_model.safetensors"),
    )
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    return folder


def meta(**kw) -> dict:
    return {"name": "movies-lora", "domain": "movies", "adapter_type": "lora", "base": FP.to_dict(), **kw}


def siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []


def test_write_then_verify_roundtrip(tmp_path):
    src = make_peft_dir(tmp_path / "src")
    (src / "README.md").write_text("model card")
    dest = tmp_path / "store" / "movies-lora" / "1"
    written = write_adapter_dir(src, dest, meta(metrics={"auc": 0.7}))
    assert sorted(written["files"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    for rel, digest in written["files"].items():
        assert digest == hashlib.sha256((src / rel).read_bytes()).hexdigest()
    assert siblings(dest) == ["1"]  # no temporary folder left
    got = verify_adapter_dir(dest)
    assert got == written == read_metadata(dest)
    assert got["metrics"] == {"auc": 0.7} and got["format"] == files.FORMAT_VERSION
    assert load_file(str(dest / "adapter_model.safetensors"))["base_model.model.q_proj.lora_A.weight"][0, 0] == 1.0


def test_writer_callable_and_save_pretrained_object(tmp_path):
    calls = []

    def writer(folder: Path) -> None:
        calls.append(folder)
        make_peft_dir(folder, fill=3.0)

    m = write_adapter_dir(writer, tmp_path / "a", meta())
    assert calls and calls[0] != tmp_path / "a"  # wrote into a temporary sibling, not in place
    assert "adapter_model.safetensors" in m["files"]
    verify_adapter_dir(tmp_path / "a")

    class FakePeftModel:
        def save_pretrained(self, folder):
            make_peft_dir(Path(folder), fill=5.0)

    write_adapter_dir(FakePeftModel(), tmp_path / "b", meta())
    verify_adapter_dir(tmp_path / "b")


def test_source_adaptrec_json_is_replaced(tmp_path):
    src = make_peft_dir(tmp_path / "src")
    (src / "adaptrec.json").write_text('{"files": {}, "name": "stale"}')
    m = write_adapter_dir(src, tmp_path / "d", meta())
    assert m["name"] == "movies-lora" and "adaptrec.json" not in m["files"]
    assert verify_adapter_dir(tmp_path / "d")["name"] == "movies-lora"


def test_tampered_byte_is_caught_and_named(tmp_path):
    dest = tmp_path / "d"
    write_adapter_dir(make_peft_dir(tmp_path / "src"), dest, meta())
    w = dest / "adapter_model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="adapter_model.safetensors"):
        verify_adapter_dir(dest)


def test_missing_and_unlisted_files_are_caught(tmp_path):
    dest = tmp_path / "d"
    write_adapter_dir(make_peft_dir(tmp_path / "src"), dest, meta())
    (dest / "extra.txt").write_text("x")
    with pytest.raises(IntegrityError, match="extra.txt"):
        verify_adapter_dir(dest)
    (dest / "extra.txt").unlink()
    (dest / "adapter_config.json").unlink()
    with pytest.raises(IntegrityError, match="adapter_config.json.*missing"):
        verify_adapter_dir(dest)
    (dest / "adaptrec.json").unlink()
    with pytest.raises(IntegrityError, match="adaptrec.json"):
        verify_adapter_dir(dest)
    with pytest.raises(IntegrityError, match="missing"):
        verify_adapter_dir(tmp_path / "nowhere")


def test_metadata_listing_a_path_outside_the_folder_is_refused(tmp_path):
    dest = tmp_path / "d"
    m = write_adapter_dir(make_peft_dir(tmp_path / "src"), dest, meta())
    (tmp_path / "outside.txt").write_text("x")
    m["files"]["../outside.txt"] = file_sha256(tmp_path / "outside.txt")
    (dest / "adaptrec.json").write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match="outside"):
        verify_adapter_dir(dest)


@pytest.mark.parametrize("bad", ["adapter_model.bin", "weights.pt", "w.pth", "x.pkl", "x.pickle", "last.ckpt", "sub/OPT.BIN"])
def test_pickle_files_are_refused_on_write(tmp_path, bad):
    src = make_peft_dir(tmp_path / "src")
    (src / bad).parent.mkdir(parents=True, exist_ok=True)
    (src / bad).write_bytes(b"\x80\x04pickle")
    dest = tmp_path / "store" / "1"
    with pytest.raises(IntegrityError, match="pickle"):
        write_adapter_dir(src, dest, meta())
    assert not dest.exists() and siblings(dest) == []


def test_pickle_from_writer_refused_and_pickle_dropped_in_refused_on_verify(tmp_path):
    def writer(folder: Path) -> None:
        make_peft_dir(folder)
        (folder / "adapter_model.bin").write_bytes(b"\x80")

    with pytest.raises(IntegrityError, match="adapter_model.bin"):
        write_adapter_dir(writer, tmp_path / "w" / "1", meta())
    assert siblings(tmp_path / "w" / "1") == []

    dest = tmp_path / "d"
    write_adapter_dir(make_peft_dir(tmp_path / "src"), dest, meta())
    (dest / "optimizer.pt").write_bytes(b"\x80")
    with pytest.raises(IntegrityError, match="optimizer.pt.*pickle"):
        verify_adapter_dir(dest)


def test_crash_mid_copy_leaves_nothing(tmp_path, monkeypatch):
    src = make_peft_dir(tmp_path / "src")
    real = files._copy_file
    n = {"calls": 0}

    def crashing_copy(a, b):
        n["calls"] += 1
        if n["calls"] == 2:
            raise OSError("disk full (simulated)")
        real(a, b)

    monkeypatch.setattr(files, "_copy_file", crashing_copy)
    dest = tmp_path / "store" / "movies-lora" / "1"
    with pytest.raises(OSError, match="simulated"):
        write_adapter_dir(src, dest, meta())
    assert n["calls"] == 2  # the crash happened after one file was copied
    assert not dest.exists() and siblings(dest) == []


def test_required_files_and_safetensors_format(tmp_path):
    src = make_peft_dir(tmp_path / "src")
    (src / "adapter_config.json").unlink()
    with pytest.raises(IntegrityError, match="adapter_config.json"):
        write_adapter_dir(src, tmp_path / "a", meta())
    src = make_peft_dir(tmp_path / "src2")
    (src / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(IntegrityError, match="not a safetensors file"):
        write_adapter_dir(src, tmp_path / "b", meta())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_existing_dest_and_missing_source_refused(tmp_path):
    src = make_peft_dir(tmp_path / "src")
    (tmp_path / "d").mkdir()
    with pytest.raises(AdaptrecError, match="already exists"):
        write_adapter_dir(src, tmp_path / "d", meta())
    with pytest.raises(AdaptrecError, match="does not exist"):
        write_adapter_dir(tmp_path / "nope", tmp_path / "e", meta())


def test_file_sha256_streams_large_files(tmp_path):
    p = tmp_path / "big"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()


def test_check_base_exact_family_none():
    m = meta(version=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_base(m, FP) == "exact"

    other_build = Fingerprint(exact="0" * 64, family=FP.family, base_model="HuggingFaceTB/SmolLM2-135M-Instruct (fp16)")
    with pytest.warns(FamilyMatchWarning, match=r"movies-lora:2.*SmolLM2-135M-Instruct.*fp16"):
        assert check_base(m, other_build) == "family"
    assert issubclass(FamilyMatchWarning, UserWarning)

    stranger = Fingerprint(exact="1" * 64, family="2" * 64, base_model="gpt2")
    with pytest.raises(FingerprintMismatch, match=r"SmolLM2-135M-Instruct.*gpt2"):
        check_base(m, stranger)
    with pytest.raises(IntegrityError, match="base fingerprint"):
        check_base({"name": "x"}, FP)
