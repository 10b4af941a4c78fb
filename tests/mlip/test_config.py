import dataclasses

import pytest
import torch

import mlip
from mlip.config import TP_SITES, PotentialConfig


def test_every_field_but_elements_has_a_default():
    cfg = PotentialConfig(elements=["H"])
    for f in dataclasses.fields(PotentialConfig):
        if f.name != "elements":
            assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
    assert cfg.tp_backend == "cg" and cfg.dtype == "float64" and cfg.r_max == 5.0


def test_round_trip_through_plain_dict():
    cfg = PotentialConfig(elements=["H", "C", "O"], tp_backend="grid", tp_backend_overrides={"interaction": "cg"},
                          tp_options={"cp": {"rank": "full"}}, e0s={"H": -13.6})
    d = cfg.to_dict()
    assert all(type(v) in (str, int, float, list, dict) for v in d.values())
    assert PotentialConfig.from_dict(d) == cfg
    assert cfg.backend("interaction") == "cg" and cfg.backend("product") == "grid"


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(elements=[]), "elements"),
        (dict(elements=["H", "Xx"]), "Xx"),
        (dict(elements=["H", "H"]), "duplicates"),
        (dict(tp_backend="fft"), "tp_backend"),
        (dict(tp_backend_overrides={"readout": "cg"}), "readout"),
        (dict(tp_backend_overrides={"product": "nope"}), "product"),
        (dict(dtype="float16"), "dtype"),
        (dict(correlation=0), "correlation"),
        (dict(r_max=-1.0), "r_max"),
        (dict(e0s={"Fe": 1.0}), "Fe"),
    ],
)
def test_invalid_fields_are_named(change, words):
    kw = dict(elements=["H", "C"])
    kw.update(change)
    with pytest.raises(ValueError, match=words):
        PotentialConfig(**kw)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="bogus"):
        PotentialConfig.from_dict({"elements": ["H"], "bogus": 1})


def test_sites_are_documented():
    assert TP_SITES == ("interaction", "product")


def test_building_float64_model_leaves_default_dtype_alone():
    before = torch.get_default_dtype()
    model = mlip.Potential(PotentialConfig(elements=["H"], num_channels=4, l_max=1, dtype="float64"))
    assert torch.get_default_dtype() == before
    assert all(p.dtype == torch.float64 for p in model.parameters())
    model32 = mlip.Potential(PotentialConfig(elements=["H"], num_channels=4, l_max=1, dtype="float32"))
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    assert torch.get_default_dtype() == before
