"""Config loading: types, unknown keys, overrides, relative paths, the shipped example."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlip import PotentialConfig
from mlip.config import FROM_DATA
from mlip.kernels.tp import BACKENDS, CGBackend, register_backend
from mlip.train import ConfigError, load_config
from mlip.train.config import config_from_dict, config_to_dict

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


# -- the model section is mlip.PotentialConfig -----------------------------------------------
def test_model_section_is_a_potential_config_with_from_data_defaults(tmp_path):
    default = PotentialConfig()
    for cfg in (config_from_dict({}), config_from_dict({"model": {"num_channels": 8}}),
                load_config(_yaml(tmp_path, "model:\n  num_channels: 8\n  cutoff_p: 6\n"))):
        assert type(cfg.model) is PotentialConfig
        # taken from the data unless given, whether or not the file has a model section
        assert (cfg.model.elements, cfg.model.e0s, cfg.model.avg_num_neighbors) == (None, None, None)
        assert cfg.model.unresolved() == list(FROM_DATA)
        assert (cfg.model.r_max, cfg.model.energy_scale, cfg.model.energy_shift) == (
            default.r_max, default.energy_scale, default.energy_shift)
    assert cfg.model.num_channels == 8 and cfg.model.cutoff_p == 6
    given = config_from_dict({"model": {"elements": ["H", "O"], "e0s": {"H": -13.6, "O": -2040.0},
                                        "avg_num_neighbors": 7}})
    assert given.model.unresolved() == [] and given.model.avg_num_neighbors == 7.0
    # E0s may be given while the elements come from the data
    assert config_from_dict({"model": {"e0s": {"H": -13.6}}}).model.e0s == {"H": -13.6}
    # the round trip through a plain dict (config.yaml, checkpoints) keeps the Nones
    assert config_from_dict(config_to_dict(config_from_dict({}))).model == config_from_dict({}).model


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("model, words", [
    ({"tp_backend": "fast"}, ["model.tp_backend", *map(repr, BACKENDS)]),
    ({"tp_backend_overrides": {"product": "fast"}}, ["model.tp_backend_overrides['product']"]),
    ({"r_max": -1.0}, ["model.r_max"]),
    ({"cutoff_p": 1}, ["model.cutoff_p", ">= 2"]),
    ({"elements": ["H", "Xx"]}, ["model.elements", "Xx"]),
    ({"elements": ["H"], "e0s": {"O": 1.0}}, ["model.e0s", "'O'"]),
    ({"avg_num_neighbors": 0}, ["model.avg_num_neighbors"]),
])
def test_model_section_is_checked_by_potential_config(model, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"model": model})
    for w in words:
        assert w in str(err.value)
    # the same check when the config is re-validated after a change
    cfg = config_from_dict({})
    for k, v in model.items():
        setattr(cfg.model, k, v)
    with pytest.raises(ConfigError, match=words[0].replace("[", r"\[").replace("]", r"\]")):
        cfg.validate()


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_every_registered_backend_is_accepted(backend):
    cfg = load_config(EXAMPLE, [f"model.tp_backend={backend}", f"model.tp_backend_overrides={{product: {backend}}}"])
    assert cfg.model.tp_backend == backend and cfg.model.backend("product") == backend


def test_a_newly_registered_backend_is_accepted():
    class CopyOfCG(CGBackend):
        name = "cg_copy_for_config_test"

    with pytest.raises(ConfigError, match="model.tp_backend"):
        load_config(EXAMPLE, [f"model.tp_backend={CopyOfCG.name}"])
    register_backend(CopyOfCG)
    try:
        assert load_config(EXAMPLE, [f"model.tp_backend={CopyOfCG.name}"]).model.tp_backend == CopyOfCG.name
    finally:
        BACKENDS.pop(CopyOfCG.name)


def test_orthoreg_needs_a_reference_model(tmp_path, cache_dir, t):
    with pytest.raises(ConfigError, match="finetune.orthoreg_weight"):
        config_from_dict(t.config(tmp_path, cache_dir, finetune={"orthoreg_weight": 0.5}))
    with pytest.raises(ConfigError, match="finetune.orthoreg_weight"):
        config_from_dict(t.config(tmp_path, cache_dir, finetune={"from_model": "x.pt", "orthoreg_weight": -1}))
