from pathlib import Path

import pytest
import yaml

from adaptlab.config import StrictModel, load_config, parse_overrides, save_config
from adaptlab.errors import ConfigError
from adaptlab.tuning.encoder_fit import EncoderTrainerSettings


class Demo(StrictModel):
    name: str = "x"
    training: EncoderTrainerSettings = EncoderTrainerSettings()


def test_precedence_defaults_file_overrides_flags(tmp_path: Path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: from-file\ntraining:\n  num_train_epochs: 3\n  learning_rate: 1.0e-3\n")
    cfg = load_config(Demo, cfg_file, ["training.num_train_epochs=7", "training.seed=5"], {"training.seed": 9})
    assert cfg.name == "from-file"
    assert cfg.training.num_train_epochs == 7
    assert cfg.training.learning_rate == 1e-3
    assert cfg.training.seed == 9
    assert cfg.training.per_device_train_batch_size == EncoderTrainerSettings().per_device_train_batch_size == 16


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["a.b=3", "c=true", "d=[x, y]", "e=hello"]) == {
        "a": {"b": 3}, "c": True, "d": ["x", "y"], "e": "hello"}


@pytest.mark.parametrize("override,needle", [
    (["training.epochz=3"], "unknown key 'training.epochz'"),
    (["training.num_train_epochs=many"], "training.num_train_epochs"),
    (["training.per_device_train_batch_size=0"], "training.per_device_train_batch_size"),
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
    cfg = load_config(Demo, None, ["training.num_train_epochs=2.5", "training.trainer_args={optim: sgd}"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Demo, tmp_path / "config.yaml") == cfg
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["training"]
    assert saved["num_train_epochs"] == 2.5 and saved["trainer_args"] == {"optim": "sgd"}


@pytest.mark.parametrize("override,needles", [
    (["training.epochs=3"], ["training", "'epochs' is now 'num_train_epochs'"]),
    (["training.batch_size=4"], ["training", "'batch_size' is now 'per_device_train_batch_size'"]),
    (["training.warmup=0.1"], ["training", "'warmup' is now 'warmup_steps'"]),
    (["training.max_length=128"], ["training", "set the top-level max_length", "not training.max_length"]),
])
def test_an_old_training_key_is_one_line_naming_where_it_went(override, needles):
    with pytest.raises(ConfigError) as caught:
        load_config(Demo, None, override)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid config: training:")
    for needle in needles:
        assert needle in message
