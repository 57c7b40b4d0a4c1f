"""Runs one tiny training job in its own process (for the SIGKILL-resume and `accelerate launch` tests).

usage: python tests/helpers/train_worker.py TINY_MODEL_DIR RUN_DIR MAX_STEPS [--resume] [--slow] [--stop-at N]
                                           [--recipe [--restart]] [--skewed-validation] [--collab]
                                           [--check-validation]

--stop-at N: every rank exits (status 0, "STOPPED") right after the checkpoint of step N, as a crash there would.
--recipe: the whole recipe job (train, evaluate, register) on synthetic files in RUN_DIR, with $ADAPTREC_HOME there;
--restart: clearing its run folder first.
--skewed-validation: validation AUC falls on rank 0 and rises on the others, every step (patience 1).
--collab: a collab adapter (on cases without item ids, so its projector is never used).
--check-validation: after training, prints each rank's validation AUC from the shared scoring and from every case.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import synthetic_cases, write_tallrec_files  # noqa: E402

import adaptrec.train.loop as loop  # noqa: E402
from adaptrec.backbone import load_backbone  # noqa: E402
from adaptrec.config import Recipe  # noqa: E402


def tiny_recipe(model_dir: str, max_steps: int, adapter: dict | None = None, template: str = "tallrec",
                **training) -> Recipe:
    return Recipe.model_validate({
        "name": "tiny", "domain": "movie",
        "backbone": {"name": model_dir, "quantization": "none"},
        "adapter": adapter or {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
        "data": {"train": "x", "valid": "x", "test": "x", "max_prompt_tokens": 256, "template": template},
        "training": {"lr": 5e-3, "batch_size": 2, "grad_accum": 2, "max_steps": max_steps, "eval_every": 4,
                     "val_limit": 8, "checkpoint_every": 2, "patience": None, **training},
    })


def tiny_recipe_file(folder: Path, model_dir: str, max_steps: int, sizes: dict[str, int], filename: str = "tiny",
                     adapter: dict | None = None, **training) -> Path:
    """A recipe file in `folder` for `tiny_recipe` over synthetic TALLRec files of `sizes` (every shot, the whole
    test split evaluated)."""
    import yaml

    files = write_tallrec_files(folder / "data", sizes)
    recipe = tiny_recipe(model_dir, max_steps, adapter, **training).model_dump(mode="json")
    recipe["data"].update(train=str(files["train"]), valid=str(files["valid"]), test=str(files["test"]), shots=None)
    recipe["evaluation"] = {"limit": None, "batch_size": 4}
    path = folder / f"{filename}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def say(line: str) -> None:
    """One line to stdout in a single write: ranks share the launcher's pipe, and `print` under unbuffered output
    writes the text and its newline apart, so another rank's line could land between them."""
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def main() -> None:
    model_dir, run_dir, max_steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    if "--recipe" in sys.argv:
        from adaptrec.config import load_recipe
        from adaptrec.train.recipe import run_recipe

        os.environ["ADAPTREC_HOME"] = str(run_dir / "home")
        path = tiny_recipe_file(run_dir, model_dir, max_steps, {"train": 16, "valid": 8, "test": 8}, eval_every=2)
        result = run_recipe(*load_recipe(str(path)), restart="--restart" in sys.argv)
        say(f"REGISTERED {result.record.ref} reported={result.report is not None}")
        return
    if "--slow" in sys.argv:  # widen the window in which the parent can kill us mid-run
        save = loop.save_checkpoint
        loop.save_checkpoint = lambda *a, **k: (save(*a, **k), time.sleep(0.4))[0]
    if "--stop-at" in sys.argv:
        stop_at, checkpoint = int(sys.argv[sys.argv.index("--stop-at") + 1]), loop.Trainer.checkpoint

        def checkpoint_then_stop(self: loop.Trainer) -> None:
            checkpoint(self)
            if self.global_step == stop_at:
                self.accelerator.wait_for_everyone()  # rank 0 has written it
                say("STOPPED")
                os._exit(0)
        loop.Trainer.checkpoint = checkpoint_then_stop
    settings = {}
    if "--skewed-validation" in sys.argv:  # each rank's AUC falls after the first on rank 0 alone (patience 1)
        calls, rank = [], int(os.environ.get("RANK", "0"))

        def skewed(*args, **kwargs) -> float:
            calls.append(1)
            return 0.6 + (len(calls) * 0.01 if rank else -len(calls) * 0.01)
        loop.validate = skewed
        settings = {"patience": 1, "eval_every": 1}
    adapter = None
    if "--collab" in sys.argv:  # the synthetic cases carry no item ids: no micro-batch uses the projector
        adapter = {"type": "collab", "r": 4, "encoder_epochs": 3, "encoder_dim": 8}
        settings["template"] = "tallrec-items"
    backbone = load_backbone(model_dir, "none", device="cpu")
    # histories of 1-4 items: two ranks' batches differ in shape, so their dropout draws move their RNGs apart
    train_cases = [replace(c, history=c.history[:1 + i % 4]) for i, c in enumerate(synthetic_cases(16))]
    result = loop.train(tiny_recipe(model_dir, max_steps, adapter, **settings), backbone, train_cases,
                        synthetic_cases(8, seed=1), run_dir, resume="--resume" in sys.argv)
    say(f"DONE steps={result.steps} world={os.environ.get('WORLD_SIZE', '1')}")
    if "--check-validation" in sys.argv:  # the ranks' shares, gathered, against every case scored on each rank
        from adaptrec.scoring.core import Scorer

        scorer = Scorer(result.model, backbone.tokenizer, "", progress=False)
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        val = synthetic_cases(8, seed=1)
        say(f"VALIDATION shared={loop.validate(scorer, val, 'pyes', rank, world):.6f} "
            f"whole={loop.validate(scorer, val):.6f}")


if __name__ == "__main__":
    main()
