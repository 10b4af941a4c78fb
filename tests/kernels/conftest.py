import pytest


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MLIP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mlip-cache"))
