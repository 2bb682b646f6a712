from pathlib import Path

import pytest
import yaml

from adaptlab.config import StrictModel, TrainingConfig, load_config, parse_overrides, save_config
from adaptlab.errors import ConfigError


class Demo(StrictModel):
    name: str = "x"
    training: TrainingConfig = TrainingConfig()


def test_precedence_defaults_file_overrides_flags(tmp_path: Path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: from-file\ntraining:\n  epochs: 3\n  learning_rate: 1.0e-3\n")
    cfg = load_config(Demo, cfg_file, ["training.epochs=7", "training.seed=5"], {"training.seed": 9})
    assert cfg.name == "from-file"
    assert cfg.training.epochs == 7
    assert cfg.training.learning_rate == 1e-3
    assert cfg.training.seed == 9
    assert cfg.training.batch_size == TrainingConfig().batch_size


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["a.b=3", "c=true", "d=[x, y]", "e=hello"]) == {
        "a": {"b": 3}, "c": True, "d": ["x", "y"], "e": "hello"}


@pytest.mark.parametrize("override,needle", [
    (["training.epochz=3"], "unknown key 'training.epochz'"),
    (["training.epochs=many"], "training.epochs"),
    (["training.batch_size=0"], "training.batch_size"),
    (["noequals"], "not key=value"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(Demo, None, override)


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Demo, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml:"):
        load_config(Demo, bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Demo, listy)


def test_saved_config_reloads_identically(tmp_path: Path):
    cfg = load_config(Demo, None, ["training.epochs=2.5"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Demo, tmp_path / "config.yaml") == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["training"]["epochs"] == 2.5
