"""`adaptrec cache`: what the home holds, and clearing its caches without touching what nothing recomputes."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from cli_runner import run_cli

from adaptrec.caches import clear, stores
from adaptrec.errors import AdaptrecError
from adaptrec.home import adaptrec_home
from adaptrec.score_cache import ScoreCache


ROWS = 3000  # enough pages for a vacuum to give some back


def _fill_home() -> None:
    """Rows of the score cache (two of an earlier key format), a kept fit, an embedding file, a run folder, and
    the dot-named temporaries of writes in flight."""
    home = adaptrec_home()
    cache = ScoreCache.default()
    cache.put_many({f"k{i}": np.array([0.1, 0.2, 0.3]) for i in range(ROWS)})
    cache.close()
    with sqlite3.connect(home / "score_cache.db") as db:
        db.execute("CREATE TABLE answer_logits (key TEXT PRIMARY KEY, yes REAL, no REAL)")
        db.executemany("INSERT INTO answer_logits VALUES (?, 0, 0)", [("a",), ("b",)])
    for folder in ("cache/encoders/fit1", "cache/encoders/.fit2.x.tmp", "runs/movie-lora-0123456789"):
        (home / folder).mkdir(parents=True)
        (home / folder / "f.bin").write_bytes(b"x" * 1000)
    (home / "embeddings").mkdir()
    (home / "embeddings" / "e.safetensors").write_bytes(b"y" * 500)
    (home / "embeddings" / ".e2.safetensors.abc.tmp").write_bytes(b"y")


def test_stores_are_listed_and_each_cache_cleared_alone():
    _fill_home()
    found = {s.name: s for s in stores()}
    assert (found["scores"].entries, found["scores"].unread) == (ROWS, 2)
    assert [found[n].entries for n in ("encoders", "embeddings", "runs")] == [1, 1, 1]  # temporaries not counted
    assert found["runs"].bytes == 1000 and not found["runs"].clearable and found["encoders"].clearable
    assert clear("scores", earlier_only=True)[0] == 2
    assert {s.name: (s.entries, s.unread) for s in stores()}["scores"] == (ROWS, 0)
    reader = ScoreCache.default()  # another process's connection, open throughout
    removed, freed = clear("scores")
    assert removed == ROWS and len(reader) == 0
    assert freed > 100_000  # the vacuumed pages checkpointed out of -wal (was: 0 freed while a reader was open)
    reader.close()
    assert clear("encoders")[0] == 1
    home = adaptrec_home()
    assert not (home / "cache/encoders/fit1").exists() and (home / "cache/encoders/.fit2.x.tmp").is_dir()
    assert clear("embeddings") == (1, 500) and (home / "embeddings/.e2.safetensors.abc.tmp").is_file()
    assert (home / "runs/movie-lora-0123456789/f.bin").is_file()  # never a cache


def test_a_home_with_nothing_yet_lists_empty_stores_and_creates_none():
    assert all(s.entries == 0 and s.bytes == 0 for s in stores())
    assert clear("scores") == (0, 0)
    assert not (adaptrec_home() / "score_cache.db").exists()


@pytest.mark.parametrize("name, earlier, said", [
    ("runs", False, ("cache 'runs': expected one of scores, encoders, embeddings (runs holds what nothing "
                     "recomputes; it is listed, not cleared)")),
    ("score", False, "cache 'score': expected one of scores, encoders, embeddings"),
    ("encoders", True, "only the score cache keeps rows of earlier formats"),
])
def test_what_is_no_cache_is_refused(name, earlier, said):
    with pytest.raises(AdaptrecError, match=said.replace("(", r"\(").replace(")", r"\)")):
        clear(name, earlier)


def test_the_cache_commands(monkeypatch, capsys):
    _fill_home()
    code, out, _ = run_cli(monkeypatch, capsys, "cache", "info", "--json")
    listed = {s["name"]: s for s in json.loads(out)}
    assert code == 0 and listed["scores"]["entries"] == ROWS and listed["runs"]["clearable"] is False
    code, out, _ = run_cli(monkeypatch, capsys, "cache", "info")
    assert "* scores" in out and "(2 of an earlier key format, never read)" in out
    code, out, _ = run_cli(monkeypatch, capsys, "cache", "clear", "scores", "--earlier-formats")
    assert code == 0 and out.startswith("cleared 2 entries of scores")
    code, _, err = run_cli(monkeypatch, capsys, "cache", "clear", "runs")
    assert code == 2 and err.strip().startswith("error: cache 'runs'")


def test_an_embedding_file_cleared_while_read_is_computed_again(monkeypatch):
    import safetensors.numpy

    from adaptrec.text_encoder import catalogue_embeddings

    class Encoder:
        name = "fake"

        def encode(self, texts):
            return np.ones((len(texts), 2), dtype=np.float32)

    catalogue_embeddings(['"a"'], Encoder())  # kept
    monkeypatch.setattr(safetensors.numpy, "load_file", lambda path: (_ for _ in ()).throw(FileNotFoundError(path)))
    assert catalogue_embeddings(['"a"'], Encoder()).shape == (1, 2)  # (was: FileNotFoundError)
