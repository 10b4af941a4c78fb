import os

import numpy as np
import pytest
import torch

import mlip
from mlip.errors import CheckpointError, ConfigError
from mlip.io import from_payload, to_payload
from mlip.kernels.tp import BACKENDS as TP_BACKENDS
from mlip.testing import predict

#: every registered tensor-product backend
BACKENDS = tuple(TP_BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_is_exact(h, tmp_path, backend):
    model = h.model(backend, "float32" if backend == "cp" else "float64")
    model.set_e0s({"H": -13.6, "Cu": -3.5})
    path = mlip.save(model, tmp_path / "model.pt")
    loaded = mlip.load(path)
    assert loaded.config == model.config and not loaded.training
    for atoms in (h.ethanol(), h.crystal()):
        a, b = predict(model, atoms), predict(loaded, atoms)
        for k in a:
            assert np.array_equal(a[k], b[k]), k


def test_file_is_plain_and_loads_weights_only(h, tmp_path):
    model = h.model("grid", tp_backend_overrides={"interaction": "cg"}, tp_options={"grid": {}})
    path = mlip.save(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "mlip.potential" and payload["format_version"] == 1
    meta = payload["metadata"]
    assert meta["elements"] == ["H", "C", "O", "Cu"] and meta["r_max"] == 5.0 and meta["dtype"] == "float64"
    assert meta["units"]["energy"] == "eV" and meta["units"]["stress"] == "eV/Å^3"
    assert meta["mlip_version"] == mlip.__version__
    assert set(meta["e0s"]) == {"H", "C", "O", "Cu"}
    assert isinstance(payload["config"], dict) and payload["config"]["tp_backend"] == "grid"
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_save_is_atomic(h, tmp_path, monkeypatch):
    model = h.model("cg")
    path = mlip.save(model, tmp_path / "m.pt")
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        mlip.save(h.model("cg", seed=3), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary file left behind


def test_load_dtype_override(h, tmp_path):
    model = h.model("cg")
    path = mlip.save(model, tmp_path / "m.pt")
    m32 = mlip.load(path, dtype="float32")
    assert m32.dtype == torch.float32 and m32.config.dtype == "float32"
    a, b = predict(model, h.crystal()), predict(m32, h.crystal())
    assert np.allclose(a["forces"], b["forces"], atol=1e-5)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        mlip.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="bad.pt"):
        mlip.load(bad)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(CheckpointError, match="other.pt.*not an mlip model"):
        mlip.load(other)


def test_payload_checks_version_and_state_dict(h, tmp_path):
    """``load`` and ``from_payload`` (also used by pickled OpenMM forces) refuse a newer format
    version and a state dict that does not fit the config, naming the source."""
    model = h.model("cg")
    payload = to_payload(model)
    again = from_payload(payload)
    assert not again.training and again.e0s() == model.e0s()
    assert np.array_equal(predict(again, h.crystal())["forces"], predict(model, h.crystal())["forces"])
    newer = dict(payload, format_version=payload["format_version"] + 1)
    with pytest.raises(CheckpointError, match="here: model format version 2 is not supported"):
        from_payload(newer, source="here")
    path = tmp_path / "newer.pt"
    torch.save(newer, path)
    with pytest.raises(CheckpointError, match="newer.pt: model format version 2"):
        mlip.load(path)
    wrong = dict(payload, state_dict={k: v for k, v in payload["state_dict"].items() if k != "embedding"})
    with pytest.raises(CheckpointError, match="state dict does not match its config"):
        from_payload(wrong)


def test_a_potential_refuses_an_unresolved_config():
    with pytest.raises(ConfigError, match="elements.*not set"):
        mlip.Potential(mlip.PotentialConfig())


class _Touch:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling calls os.system
        return (os.system, ("touch " + self.marker,))


def test_a_file_that_would_run_code_is_refused_and_says_so(tmp_path):
    """Model files and checkpoints are untrusted: a pickle that calls a function is refused with a
    message that says it would run code, never the advice to load it with weights_only=False."""
    from mlip.train.checkpoint import load_checkpoint

    evil, marker = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"format": "mlip.potential", "payload": _Touch(marker)}, evil)
    for load in (mlip.load, load_checkpoint):
        with pytest.raises(CheckpointError) as err:
            load(evil)
        msg = str(err.value)
        assert msg.startswith(f"{evil}: refused: loading this file would run code") and "system" in msg
        assert "weights_only" not in msg and "corrupted" not in msg
    assert not marker.exists()
    # a foreign pickle of class instances (numpy arrays) is refused the same way, without torch's advice
    torch.save({"a": np.zeros(3)}, tmp_path / "np.pt")
    with pytest.raises(CheckpointError, match="would run code") as err:
        mlip.load(tmp_path / "np.pt")
    assert "weights_only" not in str(err.value) and "safe_globals" not in str(err.value)


def test_files_follow_the_umask(h, tmp_path):
    model = h.model("cg")
    old = os.umask(0o027)
    try:
        path = mlip.save(model, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
