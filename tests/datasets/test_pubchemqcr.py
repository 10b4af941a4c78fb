"""PubChemQCR LMDB (gzip + pickle per CID) -> HDF5: units, stages, ids, references."""

import json

import numpy as np
import pytest

from mlip.datasets import DataError, HDF5Dataset, convert
from mlip.datasets.references import ElementEnergies
from mlip.datasets.sources import SourceOptions
from mlip.datasets.testing import pubchemqcr_steps, write_pubchemqcr_lmdb
from mlip.datasets.units import BOHR_ANGSTROM, HARTREE_EV


@pytest.fixture()
def pcq_lmdb(tmp_path, rmd17_frames):
    fr = rmd17_frames
    records = {
        702: {"pm3": pubchemqcr_steps(fr[0:4]), "hf": None,
              "DFT_1st": pubchemqcr_steps(fr[4:10], with_charge=False),  # SMASH: no charge key
              "DFT_2nd": pubchemqcr_steps(fr[10:13])},
        887: {"pm3": None, "hf": pubchemqcr_steps(fr[13:15]), "DFT_1st": pubchemqcr_steps(fr[15:20]),
              "DFT_2nd": None},
        180: {"pm3": pubchemqcr_steps(fr[20:22]), "hf": None, "DFT_1st": None, "DFT_2nd": None},
    }
    return write_pubchemqcr_lmdb(tmp_path / "pubchemqcr_0.lmdb", records), fr


def test_dft_1st_units_and_ids(tmp_path, pcq_lmdb):
    src, fr = pcq_lmdb
    r = convert("pubchemqcr", [src], tmp_path / "out.h5", progress=False)
    assert r.n_structures == 11 and r.report.skipped == 0
    ds = HDF5Dataset(r.paths[0])
    # LMDB order is by key: 000000702 before 000000887
    expected = fr[4:10] + fr[15:20]
    for i, a in enumerate(expected):
        d = ds[i]
        assert d.energy.item() == pytest.approx(a.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(d.forces.numpy(), a.get_forces(), atol=1e-5)
        np.testing.assert_allclose(d.pos.numpy(), a.positions, atol=1e-6)
        assert not d.pbc.any()
    assert [int(ds[i].trajectory_id) for i in range(11)] == [702] * 6 + [887] * 5
    assert [int(ds[i].frame_id) for i in range(6)] == list(range(6))
    assert ds.shards[0].attrs["level_of_theory"] == "DFT_1st: B3LYP/6-31G*"
    assert json.loads(ds.shards[0].attrs["stage_names"]) == ["pm3", "hf", "DFT_1st", "DFT_2nd"]
    assert {int(ds[i].stage) for i in range(11)} == {2}


def test_unit_constants():
    assert HARTREE_EV == 27.211386245988 and BOHR_ANGSTROM == 0.529177210903


def test_all_stages(tmp_path, pcq_lmdb):
    src, _ = pcq_lmdb
    r = convert("pubchemqcr", [src], tmp_path / "out.h5", options=SourceOptions(stage="all"), progress=False)
    assert r.n_structures == 4 + 6 + 3 + 2 + 5 + 2
    ds = HDF5Dataset(r.paths[0])
    stages = [int(ds[i].stage) for i in range(len(ds))]
    cids = [int(ds[i].trajectory_id) for i in range(len(ds))]
    assert cids == [180] * 2 + [702] * 13 + [887] * 7
    assert stages[:2] == [0, 0] and stages[2:15] == [0] * 4 + [2] * 6 + [3] * 3 and stages[15:] == [1] * 2 + [2] * 5


def test_isolated_atom_energies_hartree(tmp_path, pcq_lmdb):
    src, fr = pcq_lmdb
    ref = tmp_path / "atoms.json"
    ref.write_text(json.dumps({"unit": "hartree", "energies": {"H": -0.5, "C": -37.8, "O": -75.0}}))
    opts = SourceOptions(element_energies=ElementEnergies.load(ref))
    r = convert("pubchemqcr", [src], tmp_path / "out.h5", options=opts, progress=False)
    ds = HDF5Dataset(r.paths[0])
    ethanol_ref = (6 * -0.5 + 2 * -37.8 - 75.0) * HARTREE_EV
    assert ds[0].energy.item() == pytest.approx(fr[4].get_potential_energy() - ethanol_ref, abs=1e-8)
    assert "minus per-element energies" in ds.shards[0].attrs["energy_reference"]


def test_splits_never_cut_a_trajectory(tmp_path, rmd17_frames):
    records = {cid: {"pm3": None, "hf": None, "DFT_1st": pubchemqcr_steps(rmd17_frames[cid % 7: cid % 7 + 3]),
                     "DFT_2nd": None} for cid in range(1, 41)}
    src = write_pubchemqcr_lmdb(tmp_path / "p.lmdb", records)
    r = convert("pubchemqcr", [src], tmp_path / "out", shard_size=25, progress=False)
    assert len(r.paths) == 5 and r.n_structures == 120
    owner = {}
    for split in ("train", "val", "test"):
        ds = HDF5Dataset(tmp_path / "out", split=split)
        for i in range(len(ds)):
            cid = int(ds[i].trajectory_id)
            assert owner.setdefault(cid, split) == split
    assert len(owner) == 40
    assert sorted(r.splits.values()) == [12, 12, 96]


def _incomplete_record(frames):
    """DFT_1st with 10 steps: 4 good, then one of each kind of incomplete step (float charges throughout)."""
    steps = pubchemqcr_steps(frames[:10], float_charge=True, missing={1: "step", 2: "energy", 3: "gradient"})
    steps[4]["energy"] = float("nan")
    steps[5]["gradient"][2]["dy"] = float("inf")
    for key in ("coordinates", "gradient"):  # one atom fewer than the trajectory's 9
        steps[6][key] = steps[6][key][:-1]
    return {"pm3": None, "hf": None, "DFT_1st": steps, "DFT_2nd": None}


INCOMPLETE_KINDS = {"incomplete step (empty step)": 1, "incomplete step (missing energy)": 1,
                    "incomplete step (missing gradient)": 1, "incomplete step (non-finite energy)": 1,
                    "incomplete step (non-finite gradient)": 1, "incomplete step (atom count differs)": 1}


def test_incomplete_steps_skipped_and_counted(tmp_path, rmd17_frames, capsys):
    """The reference loader skips incomplete steps; so does the default conversion, counting them by reason."""
    from mlip.datasets.cli import main

    fr = rmd17_frames
    good = {"pm3": None, "hf": None, "DFT_1st": pubchemqcr_steps(fr[10:13]), "DFT_2nd": None}
    src = write_pubchemqcr_lmdb(tmp_path / "p.lmdb", {702: _incomplete_record(fr), 887: good})
    assert json.loads(json.dumps(pubchemqcr_steps(fr[:1], float_charge=True)))[0]["coordinates"][0]["charge"] == 6.0
    r = convert("pubchemqcr", [src], tmp_path / "o.h5", progress=False)
    assert r.n_structures == 4 + 3 and r.report.skipped == 6 and dict(r.report.by_kind) == INCOMPLETE_KINDS
    ds = HDF5Dataset(r.paths[0])
    kept = [0, 7, 8, 9]
    assert [int(ds[i].frame_id) for i in range(7)] == kept + [0, 1, 2]
    for j, i in enumerate(kept):
        assert ds[j].energy.item() == pytest.approx(fr[i].get_potential_energy(), abs=1e-9)
    stored = json.loads(ds.shards[0].attrs["skip_report"])
    assert stored["by_kind"] == INCOMPLETE_KINDS
    assert any("key b'000000702' stage DFT_1st step 6]: incomplete step (atom count differs): step has 8 atoms, "
               "the trajectory 9" in e for e in stored["examples"])
    ds.close()
    # the CLI prints the counts at the end
    assert main(["convert", "--format", "pubchemqcr", str(src), "-o", str(tmp_path / "c.h5"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipped 6" in err and "incomplete step (non-finite gradient)" in err


def test_incomplete_steps_strict(tmp_path, rmd17_frames, capsys):
    from mlip.datasets.cli import main

    src = write_pubchemqcr_lmdb(tmp_path / "p.lmdb", {702: _incomplete_record(rmd17_frames)})
    strict = SourceOptions(strict=True)
    with pytest.raises(DataError, match=r"step 1\]: bad record: step is NoneType"):
        convert("pubchemqcr", [src], tmp_path / "o.h5", options=strict, progress=False)
    r = convert("pubchemqcr", [src], tmp_path / "o.h5", options=strict, skip_bad=True, progress=False)
    assert r.n_structures == 4 and r.report.skipped == 6
    assert "bad shape" in r.report.by_kind and not any(k.startswith("incomplete") for k in r.report.by_kind)
    assert main(["convert", "--format", "pubchemqcr", str(src), "-o", str(tmp_path / "c.h5"), "--quiet",
                 "--strict"]) == 2
    assert "bad record: step is NoneType" in capsys.readouterr().err


def test_corrupt_record_still_stops(tmp_path, rmd17_frames):
    """Undecodable values stay bad records: the default run stops at them."""
    from mlip.datasets.testing import pubchemqcr_value, write_lmdb

    rec = _incomplete_record(rmd17_frames)
    rec["DFT_1st"][0]["energy"] = "not a number"
    items = {b"000000702": pubchemqcr_value(rec), b"000000703": b"\x1f\x8b garbage"}
    src = write_lmdb(tmp_path / "p.lmdb", items)
    with pytest.raises(DataError, match=r"step 0\]: bad value: energy 'not a number'"):
        convert("pubchemqcr", [src], tmp_path / "o.h5", progress=False)
    r = convert("pubchemqcr", [src], tmp_path / "o.h5", skip_bad=True, progress=False)
    assert r.report.by_kind["corrupt value"] == 1 and r.report.by_kind["bad value"] == 1
    assert sum(v for k, v in r.report.by_kind.items() if k.startswith("incomplete")) == 6
