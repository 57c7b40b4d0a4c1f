"""Atomic writes leave files and folders with the modes a plain write would give them (a shared home or Hub mirror
stays readable to the group the umask lets read it), not the temporary files' owner-only ones; the SQLite stores
open in WAL mode however many processes open a new file at once."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from adaptrec.atomic import atomic_dir, umask, write_json, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_and_folders_get_the_umasks_modes(tmp_path, umask_022):
    assert umask() == 0o022
    write_json(tmp_path / "a.json", {"x": 1})
    with atomic_dir(tmp_path / "folder") as tmp:
        write_text(tmp / "inside.txt", "y")
    assert _mode(tmp_path / "a.json") == 0o644 and _mode(tmp_path / "folder") == 0o755
    assert _mode(tmp_path / "folder" / "inside.txt") == 0o644


def test_a_registered_adapters_folder_gets_the_umasks_mode_across_file_systems(tmp_path, umask_022, monkeypatch):
    """Registered from an owner-only work folder, renamed into place as it was (0700): other users of a shared home
    could not read it; a work folder on another file system could not be renamed at all."""
    import errno
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from adaptrec.fingerprint import Fingerprint
    from adaptrec.registry import Registry

    src = tmp_path / "src"
    src.mkdir()
    save_file({"base_model.model.q_proj.lora_A.weight": np.ones((2, 4), np.float32)},
              str(src / "adapter_model.safetensors"))
    (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    reg = Registry(home=tmp_path / "home")
    fp = Fingerprint(exact="e" * 64, family="f" * 64, base_model="m")

    def register():
        return reg.register(src, name="a", domain="d", kind="trained", adapter_type="lora", adapter_config=None,
                            fingerprint=fp)

    record = register()
    assert _mode(record.path) == 0o755 and _mode(record.path / "adapter_model.safetensors") == 0o644
    real = os.rename

    def across(a, b):
        if Path(a).parent == reg.scratch_dir and Path(a).is_dir():  # the work folder, not its lock
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(a, b)

    monkeypatch.setattr(os, "rename", across)
    record = register()
    assert _mode(record.path) == 0o755 and reg.load_verified(record.ref, fp).version == 2


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    path = tmp_path / "secret.json"
    write_json(path, {"token": 1})
    path.chmod(0o600)
    write_json(path, {"token": 2})
    assert _mode(path) == 0o600 and path.read_text().strip().endswith("}")


def test_a_written_file_is_renamed_then_its_folder_synced(tmp_path, monkeypatch):
    """The rename is made durable (was: no fsync of the folder, so a power loss could undo a finished write)."""
    import adaptrec.atomic as atomic

    calls = []
    monkeypatch.setattr(atomic.os, "replace", lambda a, b, _r=os.replace: (calls.append("replace"), _r(a, b)))
    monkeypatch.setattr(atomic, "fsync_dir", lambda p: calls.append(("fsync_dir", p)))
    write_text(tmp_path / "a.txt", "x")
    assert calls == ["replace", ("fsync_dir", tmp_path)]


def test_a_failed_write_closes_its_descriptor_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """(was: an error in fchmod leaked mkstemp's descriptor)"""
    import adaptrec.atomic as atomic

    def refuse(fd, mode):
        raise PermissionError("no chmod here")

    monkeypatch.setattr(atomic.os, "fchmod", refuse)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(PermissionError):
        write_text(tmp_path / "a.txt", "x")
    assert set(os.listdir("/proc/self/fd")) <= before and not list(tmp_path.iterdir())


def _open_at_once(store: str, path: str, barrier, failures) -> None:
    from adaptrec.data.online_log import OnlineLog
    from adaptrec.score_cache import ScoreCache

    barrier.wait()
    try:
        ScoreCache(Path(path)) if store == "score cache" else OnlineLog(Path(path))
    except Exception as e:  # noqa: BLE001 - counted
        failures.put(str(e))


@pytest.mark.parametrize("store", ["score cache", "online log"])
def test_processes_opening_a_new_store_at_once_all_open_it(tmp_path, store):
    """Switching a new file to WAL is not covered by SQLite's busy timeout: of processes opening it together, some
    were refused "database is locked" within milliseconds (about 1 open in 13 with 8 at once)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    for round_ in range(20):
        barrier = ctx.Barrier(6)
        workers = [ctx.Process(target=_open_at_once, args=(store, str(tmp_path / f"{round_}.db"), barrier, failures))
                   for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
    seen = []
    while not failures.empty():
        seen.append(failures.get())
    assert seen == []
