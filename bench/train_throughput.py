"""Training throughput: adaptrec's loop vs plain `transformers.Trainer` + peft, in one run.

Same backbone (embedded 8-bit SmolLM2 by default), same LoRA config, same 64 TALLRec movie cases,
same batch size and number of optimizer steps. The Trainer baseline trains the usual causal-LM way
(labels = the prompt + answer tokens, as TALLRec's `finetune_rec.py` does with `train_on_inputs`);
adaptrec's loop trains the Yes/No loss on the answer-slot logits only (`logits_to_keep=1`).
Both train on the same micro-batches in the same order (the Trainer reads adaptrec's draw in sequence), and
both timings start after the backbone is loaded and include building the peft model. Throughput is prompt tokens
processed per second of training wall time; adaptrec's run also includes one validation pass over 2 prompts at
the last step, a checkpoint and saving the best adapter (its loop always does them before finishing).

    python bench/train_throughput.py [--steps 8] [--batch-size 4] [--quantization 8bit] [--repeats 3] [--quick]

Both arms run `--repeats` times in turns (ABBA); the result is the repeat with the median ratio, every ratio listed.
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

from adaptrec import scripts
from adaptrec.backbone import EMBEDDED, load_backbone  # noqa: E402
from adaptrec.config import Recipe  # noqa: E402
from adaptrec.data.prompts import ANSWERS, render_prompt  # noqa: E402
from adaptrec.data.sampling import few_shot, stratified_subset  # noqa: E402
from adaptrec.data.spec import load_spec  # noqa: E402
from adaptrec.train.loop import micro_batches, train  # noqa: E402

LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def prompt_tokens(tokenizer, prompts: list[str]) -> int:
    return sum(len(tokenizer(p).input_ids) for p in prompts)


def run_adaptrec(args, cases, seen, val_cases) -> dict:
    backbone = load_backbone(args.backbone, args.quantization)
    recipe = Recipe.model_validate({
        "name": "bench", "domain": "movie", "backbone": {"name": args.backbone, "quantization": args.quantization},
        "adapter": LORA, "data": {"train": "-", "valid": "-", "test": "-"},
        "training": {"lr": 1e-3, "batch_size": args.batch_size, "grad_accum": 1, "max_steps": args.steps,
                     "eval_every": args.steps, "val_limit": 2, "checkpoint_every": args.steps, "patience": None,
                     "warmup_steps": 0, "scheduler": "constant"},
    })
    tokens = prompt_tokens(backbone.tokenizer, [render_prompt(c, "tallrec", backbone.tokenizer, 512) for c in seen])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(recipe, backbone, cases, val_cases, Path(tmp) / "run")
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "prompt_tokens": tokens, "tokens_per_s": tokens / seconds}


def run_trainer(args, seen) -> dict:
    """The Trainer on `seen`, adaptrec's micro-batches in order, read in sequence (no reshuffling)."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import SequentialSampler
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    class InOrder(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    backbone = load_backbone(args.backbone, args.quantization)
    tok = backbone.tokenizer
    start = time.perf_counter()
    model = get_peft_model(backbone.model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05,
                                                      target_modules=["q_proj", "v_proj"]))
    rows = []
    for c in seen:
        ids = tok(render_prompt(c, "tallrec", tok, 512) + ANSWERS[c.label]).input_ids + [tok.eos_token_id]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)})
    data = Dataset.from_list(rows)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = InOrder(
            model=model, train_dataset=data, data_collator=DataCollatorForSeq2Seq(tok, padding=True),
            args=TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, max_steps=args.steps,
                                   learning_rate=1e-3, lr_scheduler_type="constant", save_strategy="no",
                                   report_to=[], logging_steps=args.steps, use_cpu=not torch.cuda.is_available(),
                                   disable_tqdm=True, seed=0, dataloader_num_workers=0),
        )
        trainer.train()
        seconds = time.perf_counter() - start
    tokens = prompt_tokens(tok, [render_prompt(c, "tallrec", tok, 512) for c in seen])  # adaptrec's count
    return {"seconds": seconds, "prompt_tokens": tokens, "tokens_per_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=scripts.positive_int, default=8)
    parser.add_argument("--batch-size", type=scripts.positive_int, default=4)
    parser.add_argument("--backbone", default=EMBEDDED)
    parser.add_argument("--quantization", default="8bit")
    parser.add_argument("--repeats", type=scripts.positive_int, default=3,
                        help="runs of both arms, in turns (ABBA): this VM's speed drifts within minutes")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (2 steps, 1 repeat), written to bench/results/"
                        "train_throughput.quick.json, never the file docs render")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = min(args.steps, 2), 1
    cases = few_shot([c for c in load_spec("tallrec:movie:train").cases], 64, 0)
    val_cases = stratified_subset(load_spec("tallrec:movie:valid").cases, 2, 0)
    seen = [c for i in range(args.steps) for c in micro_batches(cases, args.batch_size, 0, i)]
    runs = []
    for r in range(args.repeats):  # in turns, so drift hits both arms alike
        if r % 2 == 0:
            ours = run_adaptrec(args, cases, seen, val_cases)
            base = run_trainer(args, seen)
        else:
            base = run_trainer(args, seen)
            ours = run_adaptrec(args, cases, seen, val_cases)
        runs.append({"adaptrec": ours, "transformers_trainer": base,
                     "ratio": ours["tokens_per_s"] / base["tokens_per_s"]})
    median = sorted(runs, key=lambda run: run["ratio"])[len(runs) // 2]  # the repeat with the median ratio
    report("train_throughput", {
        "config": {"steps": args.steps, "batch_size": args.batch_size, "backbone": args.backbone,
                   "quantization": args.quantization, "repeats": args.repeats,
                   "backend": backend(args.quantization), "adapter": LORA, "data": "tallrec:movie:train, 64 shots, seed 0"},
        "adaptrec": median["adaptrec"], "transformers_trainer": median["transformers_trainer"],
        "ratio_tokens_per_s": median["ratio"], "ratios": [run["ratio"] for run in runs], "target_ratio": 1.0,
    }, quick=args.quick)


if __name__ == "__main__":
    scripts.run(main)
