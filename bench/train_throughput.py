"""Training throughput: adaptrec's loop vs plain `transformers.Trainer` + peft, in one run.

Same backbone (embedded 8-bit SmolLM2 by default), same LoRA config, same 64 TALLRec movie cases,
same batch size and number of optimizer steps. The Trainer baseline trains the usual causal-LM way
(labels = the prompt + answer tokens, as TALLRec's `finetune_rec.py` does with `train_on_inputs`);
adaptrec's loop trains the Yes/No loss on the answer-slot logits only (`logits_to_keep=1`).
Throughput is prompt tokens processed per second of training wall time; adaptrec's run includes one
validation pass over 2 prompts at the last step (its loop always validates before finishing).

    python bench/train_throughput.py [--steps 8] [--batch-size 4] [--quantization 8bit]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import backend, report  # noqa: E402

from adaptrec.backbone import EMBEDDED, load_backbone  # noqa: E402
from adaptrec.config import Recipe  # noqa: E402
from adaptrec.data.prompts import ANSWERS, render_prompt  # noqa: E402
from adaptrec.data.sampling import few_shot, stratified_subset  # noqa: E402
from adaptrec.data.spec import load_spec  # noqa: E402
from adaptrec.train.loop import micro_batches, train  # noqa: E402

LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def prompt_tokens(tokenizer, prompts: list[str]) -> int:
    return sum(len(tokenizer(p).input_ids) for p in prompts)


def run_adaptrec(args, cases, val_cases) -> dict:
    backbone = load_backbone(args.backbone, args.quantization)
    recipe = Recipe.model_validate({
        "name": "bench", "domain": "movie", "backbone": {"name": args.backbone, "quantization": args.quantization},
        "adapter": LORA, "data": {"train": "-", "valid": "-", "test": "-"},
        "training": {"lr": 1e-3, "batch_size": args.batch_size, "grad_accum": 1, "max_steps": args.steps,
                     "eval_every": args.steps, "val_limit": 2, "checkpoint_every": args.steps, "patience": None,
                     "warmup_steps": 0, "scheduler": "constant"},
    })
    seen = [c for i in range(args.steps) for c in micro_batches(cases, args.batch_size, 0, i)]
    tokens = prompt_tokens(backbone.tokenizer, [render_prompt(c, "tallrec", backbone.tokenizer, 512) for c in seen])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(recipe, backbone, cases, val_cases, Path(tmp) / "run")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "prompt_tokens": tokens, "tokens_per_s": tokens / seconds}


def run_trainer(args, cases) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    backbone = load_backbone(args.backbone, args.quantization)
    tok = backbone.tokenizer
    model = get_peft_model(backbone.model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05,
                                                      target_modules=["q_proj", "v_proj"]))
    rows = []
    for c in cases:
        ids = tok(render_prompt(c, "tallrec", tok, 512) + ANSWERS[c.label]).input_ids + [tok.eos_token_id]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    data = Dataset.from_list(rows)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model=model, train_dataset=data, data_collator=DataCollatorForSeq2Seq(tok, padding=True),
            args=TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                   learning_rate=1e-3, lr_scheduler_type="constant", save_strategy="no",
                                   report_to=[], logging_steps=args.steps, use_cpu=not torch.cuda.is_available(),
                                   disable_tqdm=True, seed=0, dataloader_num_workers=0),
        )
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    # the Trainer's sampler draws its own order; every sample has a prompt, so count what it saw
    order = list(trainer.get_train_dataloader().sampler)[: args.steps * args.batch_size]
    tokens = sum(len(rows[i]["input_ids"]) - len(tok(ANSWERS[cases[i].label]).input_ids) - 1 for i in order)
    return {"seconds": seconds, "prompt_tokens": tokens, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--backbone", default=EMBEDDED)
    parser.add_argument("--quantization", default="8bit")
    args = parser.parse_args()
    cases = few_shot([c for c in load_spec("tallrec:movie:train").cases], 64, 0)
    val_cases = stratified_subset(load_spec("tallrec:movie:valid").cases, 2, 0)
    ours = run_adaptrec(args, cases, val_cases)
    base = run_trainer(args, cases)
    report("train_throughput", {
        "config": {"steps": args.steps, "batch_size": args.batch_size, "backbone": args.backbone,
                   "quantization": args.quantization,
                   "backend": backend(args.quantization), "adapter": LORA, "data": "tallrec:movie:train, 64 shots, seed 0"},
        "adaptrec": ours, "transformers_trainer": base,
        "ratio_tokens_per_s": ours["tokens_per_s"] / base["tokens_per_s"], "target_ratio": 1.0,
    })


if __name__ == "__main__":
    main()
