"""SIGKILL in the middle of every write the toolkit does: registry register/remove, gc, Hub pull from a mirror,
checkpoint save and score-cache write. Each runs in a child process killed at seeded moments (KILLS per
operation); afterwards nothing half-written is visible and, after `gc`, `registry verify` finds nothing wrong."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from adaptrec.fingerprint import Fingerprint
from adaptrec.registry import Registry
from adaptrec.score_cache import ScoreCache
from adaptrec.train import checkpoint as ck

KILLS = 3  # kills per operation, at seeded delays after the child finished its first one
FP = Fingerprint(exact="e" * 64, family="f" * 64, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
PRELUDE = f"""
import json, sys
from pathlib import Path
from adaptrec.fingerprint import Fingerprint
from adaptrec.registry import Registry
FP = Fingerprint.from_dict({json.dumps(FP.to_dict())})


def done(n):  # the first operation finished: the parent's kill clock starts (a slow disk cannot beat it)
    if n == 1:
        print("DONE", flush=True)
"""


def _adapter(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"base_model.model.q_proj.lora_A.weight": np.ones((2, 64), dtype=np.float32),
               "base_model.model.q_proj.lora_B.weight": np.ones((64, 2), dtype=np.float32)},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    return folder


def _kill_during(code: str, home: Path, seed: int, after_each=lambda: None) -> None:
    """Run `code` in child processes (cwd and $ADAPTREC_HOME: `home`) and SIGKILL each at a seeded moment after it
    prints READY and then DONE (its first operation finished: a timer from READY alone could fire before a slow disk
    finished one); `after_each()` checks the state each kill left."""
    rng = random.Random(seed)
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ADAPTREC_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for _ in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env, cwd=home,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        assert child.stdout.readline().strip() == "DONE", child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL, child.stderr.read()  # killed mid-work, not finished
        after_each()


def _registry_intact(home: Path) -> Registry:
    reg = Registry(home=home)
    problems = reg.verify()
    leftovers = ("unfinished write", "orphan folder", "a killed process")  # only leftovers gc owns
    assert all(any(kind in p for kind in leftovers) for p in problems), problems
    reg.gc()
    assert reg.verify() == []
    return reg


def test_kill_during_register_remove_and_gc(tmp_path):
    src = _adapter(tmp_path / "src")
    code = f"""
    reg = Registry()
    print("READY", flush=True)
    i = 0
    while True:
        rec = reg.register(Path({str(src)!r}), name=f"a{{i % 3}}", domain="d", kind="trained", adapter_type="lora",
                           adapter_config=None, fingerprint=FP)
        if i % 2:
            reg.remove(rec.ref)
        if i % 5 == 0:
            reg.gc()
        i += 1
        done(i)
    """
    _kill_during(code, tmp_path / "home", seed=1)
    reg = _registry_intact(tmp_path / "home")
    assert reg.list(), "no register finished in the time given: lengthen the delays"
    for rec in reg.list():
        reg.load_verified(rec.ref, FP)  # every visible version loads whole


def test_kill_during_pull_from_a_mirror(tmp_path):
    home = tmp_path / "home"
    publisher = Registry(home=tmp_path / "publisher")
    rec = publisher.register(_adapter(tmp_path / "src"), name="m", domain="d", kind="trained", adapter_type="lora",
                             adapter_config=None, fingerprint=FP)
    from adaptrec.hub.push import push_to_mirror

    os.environ["ADAPTREC_HOME"] = str(tmp_path / "publisher")
    try:
        mirror = push_to_mirror(rec.ref, tmp_path / "mirror").url
    finally:
        del os.environ["ADAPTREC_HOME"]
    code = f"""
    from adaptrec.hub.pulling import pull
    reg = Registry()
    print("READY", flush=True)
    i = 0
    while True:
        pull({str(mirror)!r}, name=f"p{{i}}", registry=reg, backbone_fp=FP)
        i += 1
        done(i)
    """
    _kill_during(code, home, seed=2)
    reg = _registry_intact(home)
    assert reg.list(), "no pull finished in the time given: lengthen the delays"


def test_kill_during_checkpoint_saves(tmp_path):
    code = """
    import torch
    from adaptrec.train.checkpoint import save_checkpoint
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 64)).sum().backward(); opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    print("READY", flush=True)
    step = 0
    while True:
        step += 1
        save_checkpoint(Path("run"), step, {n: p.detach() for n, p in model.named_parameters()}, opt, sched, {},
                        {"early_stopping": {}})
        done(step)
    """
    run = tmp_path / "home" / "run"

    def whole_checkpoints() -> None:
        data = ck.newest_readable(run, log=lambda line: None)
        assert data is not None and data.ckpt.step >= 1  # a whole checkpoint is always there to resume from
        for folder in (run / "checkpoints").iterdir():
            if not folder.name.startswith("."):  # every folder under its final name is complete
                ck.read_checkpoint(ck.Checkpoint(folder, int(folder.name[len("step_"):])))

    _kill_during(code, tmp_path / "home", seed=3, after_each=whole_checkpoints)


def test_kill_during_score_cache_writes(tmp_path):
    code = """
    import numpy as np
    from adaptrec.score_cache import ScoreCache
    cache = ScoreCache(Path("cache.db"))
    print("READY", flush=True)
    i = 0
    while True:
        cache.put_many({f"k{j}": np.array([j, -j, 2.0 * j]) for j in range(i, i + 50)})
        i += 50
        done(i // 50)
    """
    home = tmp_path / "home"
    _kill_during(code, home, seed=4)
    cache = ScoreCache(home / "cache.db")
    n = len(cache)
    assert n > 0 and n % 50 == 0  # whole batches only
    rows = cache.get_many([f"k{j}" for j in range(n)])
    assert len(rows) == n and all(np.array_equal(rows[f"k{j}"], [j, -j, 2.0 * j]) for j in range(n))
