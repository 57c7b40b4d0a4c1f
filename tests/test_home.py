"""Where adaptrec keeps its state and finds its data (adaptrec.home)."""

from __future__ import annotations

from adaptrec import home


def test_data_is_found_beside_a_checkout_or_in_the_home_never_from_the_working_directory(tmp_path, monkeypatch):
    """(was: an installed wheel read `<cwd>/../shared/data` whatever the working directory, and named a guessed
    `lib/python3.x/shared/data` path when nothing was there)"""
    monkeypatch.delenv("ADAPTREC_DATA", raising=False)
    monkeypatch.setenv("ADAPTREC_HOME", str(tmp_path / "home"))
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "shared")  # a working directory whose parent holds shared/data
    assert home.data_root() == home.REPO_ROOT.parent / "shared" / "data"  # this checkout's
    monkeypatch.setattr(home, "REPO_ROOT", tmp_path / "venv" / "lib" / "site-packages")  # an installed wheel's
    assert home.data_root() == tmp_path / "home" / "data"
    monkeypatch.setenv("ADAPTREC_DATA", str(tmp_path / "mine"))
    assert home.data_root() == tmp_path / "mine"
