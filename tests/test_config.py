"""The one config loader (nestlearn/config.py): typed nested dataclasses from YAML, for model, run and
recipe configs alike."""

from dataclasses import dataclass, field

import pytest

from nestlearn.config import build, override, read_yaml, to_dict
from nestlearn.models import from_dict as model_from_dict
from nestlearn.models import preset
from nestlearn.train import from_dict as run_from_dict
from nestlearn.train import load_config


@dataclass
class Inner:
    rate: float = 0.5
    name: str = "a"


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    items: list[Inner] = field(default_factory=list)
    pair: tuple[float, float] = (0.9, 0.95)
    maybe: float | None = None
    count: int = 1


def test_nested_lists_tuples_and_numbers():
    obj = build(Outer, {"inner": {"rate": 1}, "items": [{"rate": "1e-4"}, {"name": "b"}], "pair": [1, "0.5"],
                        "maybe": 2})
    assert obj.inner == Inner(rate=1.0) and isinstance(obj.inner.rate, float)
    assert obj.items == [Inner(rate=1e-4), Inner(name="b")]  # YAML 1.1 reads 1e-4 as a string
    assert obj.pair == (1.0, 0.5) and obj.maybe == 2.0 and isinstance(obj.maybe, float)
    assert to_dict(obj) == {"inner": {"rate": 1.0, "name": "a"}, "items": [{"rate": 1e-4, "name": "a"},
                            {"rate": 0.5, "name": "b"}], "pair": [1.0, 0.5], "maybe": 2.0, "count": 1}
    assert build(Outer, to_dict(obj)) == obj  # round trip


def test_unknown_keys_are_named_with_their_path():
    with pytest.raises(ValueError, match=r"unknown config key 'items\.0\.nmae'; valid keys: \['name', 'rate'\]"):
        build(Outer, {"items": [{"nmae": "x"}]})
    with pytest.raises(ValueError, match="pair must have 2 entries"):
        build(Outer, {"pair": [1, 2, 3]})
    with pytest.raises(ValueError, match="inner.rate must be a number"):
        build(Outer, {"inner": {"rate": "fast"}})


def test_dotted_override_coerces_and_names_unknown_keys():
    obj = override(Outer(items=[Inner(), Inner()]), "items.1.rate", 2)
    assert obj.items[1].rate == 2.0 and isinstance(obj.items[1].rate, float)
    with pytest.raises(ValueError, match="unknown config key 'inner.size'"):
        override(Outer(), "inner.size", 3)
    with pytest.raises(ValueError, match="not an index of a list of 0"):
        override(Outer(), "items.0.rate", 3)


def test_malformed_yaml_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  dim: 32\n  heads: [2\n")
    with pytest.raises(ValueError) as e:
        read_yaml(bad)
    msg = str(e.value)
    assert msg.startswith(f"{bad}:") and "malformed YAML" in msg and "\n" not in msg
    line = int(msg.split(":")[1])
    assert 3 <= line <= 4
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="is a mapping"):
        read_yaml(tmp_path / "list.yaml")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")


def test_model_run_and_recipe_configs_share_the_loader(tmp_path):
    # a model section may start from a preset; its other keys override the preset's
    cfg = model_from_dict({"preset": "debug", "block": "transformer", "cms": {"hidden_mult": 2}})
    assert cfg.dim == preset("debug").dim and cfg.cms.hidden_mult == 2.0 and cfg.block == "transformer"
    assert cfg.cms.levels == preset("debug").cms.levels  # merged, not replaced
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        model_from_dict({"preset": "huge"})
    run = run_from_dict({"model": {"preset": "debug"}, "optim": {"lr": "3e-4", "betas": [0.9, 0.99]}})
    assert run.optim.lr == 3e-4 and run.optim.betas == (0.9, 0.99) and run.model.dim == preset("debug").dim
    with pytest.raises(ValueError, match="unknown config key 'optim.lrr'"):
        run_from_dict({"optim": {"lrr": 1}})
    path = tmp_path / "run.yaml"
    path.write_text("model: {preset: debug}\ntrain: {steps: 3}\n")
    cfg = load_config(path, ["model.cms.levels.1.lr=0", "train.seed=4"])
    assert cfg.model.cms.levels[1].lr == 0.0 and cfg.train.seed == 4 and cfg.train.steps == 3
    with pytest.raises(ValueError, match="unknown config key 'train.stpes'"):
        load_config(path, ["train.stpes=4"])


def test_every_preset_file_loads():
    from nestlearn.models import PRESETS

    assert {"debug", "tiny", "small", "hope-760m", "hope-1.3b"} <= set(PRESETS)
    for name in PRESETS:
        assert preset(name).dim > 0


@pytest.mark.parametrize("device, message", [
    ("gpu", "'gpu' is not a device name"),
    ("cuda:7", "'cuda:7': this machine has"),
])
def test_a_device_this_machine_lacks_is_refused_before_the_run(device, message, tmp_path):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 CUDA devices")
    with pytest.raises(ValueError, match=f"train.device: {message}"):
        load_config(None, [f"train.device={device}"])
    from pathlib import Path

    from nestlearn.experiments.synthetic import main as synthetic

    recipe = str(Path(__file__).resolve().parents[1] / "experiments" / "synthetic" / "mqar.yaml")
    with pytest.raises(ValueError, match=f"device: {message}"):
        synthetic(recipe, quick=True, out=str(tmp_path), device=device)
    with pytest.raises(ValueError, match="--threads must be ≥ 1"):
        synthetic(recipe, quick=True, out=str(tmp_path), threads=0)
