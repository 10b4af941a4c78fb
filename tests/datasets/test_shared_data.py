"""shared_data_dir: $MLIP_SHARED_DATA, else shared/data next to the source checkout, else None."""

from pathlib import Path

from mlip.datasets import testing


def _fake_package(root: Path, checkout: bool) -> Path:
    module = root / "repo" / "datasets" / "testing.py"
    module.parent.mkdir(parents=True)
    if checkout:
        (root / "repo" / "pyproject.toml").write_text("[project]\nname = 'mlip'\n")
    return module


def test_environment_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MLIP_SHARED_DATA", str(tmp_path / "elsewhere"))
    assert testing.shared_data_dir() == tmp_path / "elsewhere"  # as given, even if missing


def test_next_to_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("MLIP_SHARED_DATA", raising=False)
    monkeypatch.setattr(testing, "__file__", str(_fake_package(tmp_path, checkout=True)))
    assert testing.shared_data_dir() is None  # no shared/data folder yet
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert testing.shared_data_dir() == tmp_path / "shared" / "data"


def test_installed_package_finds_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("MLIP_SHARED_DATA", raising=False)
    monkeypatch.setattr(testing, "__file__", str(_fake_package(tmp_path, checkout=False)))  # site-packages/mlip
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert testing.shared_data_dir() is None
