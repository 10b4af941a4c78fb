"""Config loading: types, unknown keys, overrides, relative paths, the shipped example."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlip.train import ConfigError, load_config
from mlip.train.config import config_from_dict

EXAMPLE = Path(__file__).resolve().parents[2] / "mlip" / "train" / "configs" / "ethanol.yaml"


def test_example_config_loads_and_points_at_bundled_data():
    cfg = load_config(EXAMPLE)
    assert Path(cfg.data.train[0]).resolve().is_file()
    assert cfg.model.tp_backend == "cg" and cfg.optim.lr == 0.01


def test_overrides_with_dotted_paths():
    cfg = load_config(EXAMPLE, ["optim.lr=1e-3", "model.tp_backend=grid", "train.patience=3",
                                "optim.clip_grad_norm=null", "model.radial_mlp=[8, 8]", "out=runs/x"])
    assert cfg.optim.lr == 1e-3 and cfg.model.tp_backend == "grid" and cfg.train.patience == 3
    assert cfg.optim.clip_grad_norm is None and cfg.model.radial_mlp == [8, 8] and cfg.out == "runs/x"


@pytest.mark.parametrize("override, words", [
    ("optim.lrr=1", ["optim.lrr", "lr", "weight_decay", "ema_decay"]),
    ("bogus=1", ["bogus", "data", "model", "train"]),
    ("model.l_max=two", ["model.l_max", "int"]),
    ("schedule.kind=linear", ["schedule.kind", "'cosine'", "'plateau'", "'constant'"]),
    ("model.dtype=float16", ["model.dtype", "'float32'", "'float64'"]),
    ("train.max_steps=0", ["train.max_steps", ">= 1"]),
    ("train.progress=maybe", ["train.progress", "bool"]),
    ("optim.betas=[0.9]", ["optim.betas", "two numbers"]),
    ("optim.lr", ["key=value"]),
])
def test_bad_values_name_the_key_and_allowed_values(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(EXAMPLE, [override])
    for w in words:
        assert w in str(err.value)


def test_unknown_key_in_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  num_channel: 8\n")
    with pytest.raises(ValueError, match=r"model\.num_channel.*num_channels"):
        load_config(p)


def test_wrong_type_nested_and_section_not_mapping():
    with pytest.raises(ConfigError, match=r"model\.e0s\.H: expected float"):
        config_from_dict({"model": {"e0s": {"H": "low"}}})
    with pytest.raises(ConfigError, match=r"loss: expected a mapping"):
        config_from_dict({"loss": 3})


def test_relative_data_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.yaml"
    p.write_text("data:\n  train: [../x.xyz]\n  val: y.h5\n")
    cfg = load_config(p)
    assert cfg.data.train == [str(tmp_path / "sub" / "../x.xyz")]
    assert cfg.data.val == [str(tmp_path / "sub" / "y.h5")]
