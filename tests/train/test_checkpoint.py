"""Checkpoints under faults: numeric step order, fsync before a checkpoint counts, falling back past a corrupt
newest checkpoint, a truncated metrics line, a stale `best.new` left by a crash."""

from __future__ import annotations

import json
import os

import pytest
import torch

from adaptrec import atomic
from adaptrec.train import checkpoint as ck
from adaptrec.train.loop import _save_adapter, _trim_metrics


def _save(run_dir, step: int):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    adapter = {n: p.detach() for n, p in model.named_parameters()}
    return ck.save_checkpoint(run_dir, step, adapter, opt, sched, {}, {"early_stopping": {}}), opt, sched


def test_steps_order_as_numbers_past_999999(tmp_path):
    for step in (999_998, 999_999, 1_000_000):
        _save(tmp_path, step)
    assert [c.step for c in ck.checkpoints(tmp_path)] == [1_000_000, 999_999]  # the two newest kept
    assert ck.latest_checkpoint(tmp_path).step == 1_000_000


def test_a_corrupt_newest_checkpoint_falls_back_with_one_line(tmp_path):
    _save(tmp_path, 4)
    newest, opt, sched = _save(tmp_path, 8)
    (newest / "optimizer.safetensors").write_bytes(b"\x00" * 10)  # a crash mid-write, or a bad disk
    lines: list[str] = []
    data = ck.newest_readable(tmp_path, log=lines.append)
    assert data.ckpt.step == 4 and len(lines) == 1 and "step_000008" in lines[0] and "optimizer" in lines[0]
    ck.apply_checkpoint(data, opt, sched)
    (tmp_path / "checkpoints" / "step_000004" / "state.json").write_text("{")
    assert ck.newest_readable(tmp_path, log=lines.append) is None and len(lines) == 3


@pytest.mark.parametrize("edit", [{"trainer": []}, {"trainer": {}}, {"scheduler": 3}])
def test_a_state_file_of_another_shape_falls_back_with_one_line(tmp_path, edit):
    """(was: valid JSON of another shape passed the read, then the resume failed with an AttributeError or a
    KeyError traceback)"""
    _save(tmp_path, 4)
    state = _save(tmp_path, 8)[0] / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), **edit}))
    lines: list[str] = []
    assert ck.newest_readable(tmp_path, log=lines.append).ckpt.step == 4
    assert len(lines) == 1 and "holds another shape than a save writes" in lines[0]


def test_a_run_resumed_before_unreadable_checkpoints_keeps_its_own(tmp_path):
    """(was: the two highest steps were kept, readable or not, so the resumed run's step 8 was deleted as it was
    written, and a second crash restarted from step 0)"""
    for step in (16, 24):
        (_save(tmp_path, step)[0] / "adapter.safetensors").write_bytes(b"garbage")  # a bad disk
    assert ck.newest_readable(tmp_path, log=lambda line: None) is None  # the run restarts from step 0
    _save(tmp_path, 8)
    assert [c.step for c in ck.checkpoints(tmp_path)] == [8]
    assert ck.newest_readable(tmp_path, log=lambda line: None).ckpt.step == 8


def test_checkpoint_files_and_folder_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(atomic.os, "fsync",
                        lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "rename", lambda a, b: events.append(("rename", str(b))) or real_rename(a, b))
    path, _, _ = _save(tmp_path, 1)
    moved = events.index(("rename", str(path)))
    before = {os.path.basename(p) for what, p in events[:moved] if what == "fsync"}
    assert {"adapter.safetensors", "optimizer.safetensors", "state.json", "rng.safetensors"} <= before
    assert ("fsync", str(path.parent)) in events[moved + 1:]  # then the rename itself is made durable


def test_a_truncated_last_metrics_line_is_dropped_not_fatal(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 0.7}) + "\n" + json.dumps({"step": 2, "loss": 0.6}) + "\n{\"step\": 3, \"lo")
    _trim_metrics(path, 5, "pass restart=True")
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


class _FakeModel:
    adaptrec_tuner = "lora"

    def save_pretrained(self, folder, safe_serialization=True, save_embedding_layers=False):
        (folder / "adapter_model.safetensors").write_bytes(b"weights")


def test_a_stale_best_new_left_by_a_crash_does_not_block_saving(tmp_path):
    for stale in ("best.new", "best.old"):
        (tmp_path / stale).mkdir()
        (tmp_path / stale / "leftover").write_text("x")
    _save_adapter(_FakeModel(), tmp_path / "best")
    _save_adapter(_FakeModel(), tmp_path / "best")
    assert (tmp_path / "best" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "best.new").exists() and not (tmp_path / "best.old").exists()


def test_a_crash_between_the_renames_keeps_the_new_best_adapter(tmp_path):
    """Killed after `best` moved to `best.old` and before `best.new` took its name: the complete new one is the
    best, not lost (finish would otherwise save the last step's adapter under a best_step it does not hold)."""
    from adaptrec.train.loop import _recovered

    for folder, data in (("best.old", b"older"), ("best.new", b"newer")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "adapter_model.safetensors").write_bytes(data)
    assert _recovered(tmp_path / "best")
    assert (tmp_path / "best" / "adapter_model.safetensors").read_bytes() == b"newer"


def test_a_kill_while_pruning_leaves_no_partial_checkpoint_under_its_name(tmp_path, monkeypatch):
    """Pruning an old checkpoint file by file under its real name left a folder that looked like a checkpoint
    but was not whole (found by the crash matrix): a kill mid-delete now leaves only a hidden `.deleting` folder."""
    for step in (1, 2):
        _save(tmp_path, step)

    def killed_midway(folder, ignore_errors=False):
        if not folder.exists():
            return
        next(p for p in sorted(folder.iterdir()) if p.is_file()).unlink()
        raise RuntimeError("killed")

    monkeypatch.setattr(ck.shutil, "rmtree", killed_midway)
    with pytest.raises(RuntimeError, match="killed"):
        _save(tmp_path, 3)  # prunes step 1
    monkeypatch.undo()
    assert (tmp_path / "checkpoints" / ".step_000001.deleting").is_dir()  # the kill hit the hidden copy
    for found in ck.checkpoints(tmp_path):
        ck.read_checkpoint(found)  # everything under a step name is whole
    assert [c.step for c in ck.checkpoints(tmp_path)] == [3, 2]
    _save(tmp_path, 4)  # the next save clears the interrupted deletion
    assert not list((tmp_path / "checkpoints").glob(".*.deleting"))
