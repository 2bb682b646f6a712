"""Contract checks: example configs validate, the shipped demo data is well formed, the CLI answers."""

from pathlib import Path

import pytest

from adaptlab import example_configs
from adaptlab.config import load_config
from adaptlab.data.records import read_records
from adaptlab.recipes.demo import demo_data
from adaptlab.recipes.ner import NERTrainConfig
from adaptlab.recipes.relations import RETrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,model", [("ner", NERTrainConfig), ("re", RETrainConfig)])
def test_example_configs_validate(name, model):
    cfg = load_config(model, example_configs.path(name))
    assert cfg.model == "minilm"


def example_config_models():
    from adaptlab.merge.config import MergeConfig
    from adaptlab.merge.search import SearchConfig
    from adaptlab.recipes.cls import ClsTrainConfig
    from adaptlab.recipes.domain_instruct import DomainInstructConfig
    from adaptlab.recipes.fractal import FractalEvalConfig
    from adaptlab.recipes.fractal_sft import FractalSFTConfig
    from adaptlab.recipes.lm_evaluate import LMEvalConfig
    from adaptlab.recipes.lm_prepare import PrepareConfig
    from adaptlab.recipes.lm_train import LMTrainConfig
    from adaptlab.recipes.multitask import MultitaskConfig
    from adaptlab.recipes.zero_shot import ZeroShotConfig
    from adaptlab.synth.config import SynthConfig

    return {"synth_biospecies": SynthConfig, "zero_shot_ner": ZeroShotConfig,
            "merge_chat_vector": MergeConfig, "merge_ties": MergeConfig,
            "merge_search": SearchConfig, "fractal": FractalEvalConfig,
            "fractal_sft": FractalSFTConfig, "lm_prepare": PrepareConfig, "lm_cpt": LMTrainConfig,
            "lm_sft": LMTrainConfig, "lm_evaluate": LMEvalConfig,
            "domain_instruct": DomainInstructConfig, "cls": ClsTrainConfig,
            "multitask": MultitaskConfig, "lm_distill": LMTrainConfig, "merge_slerp_mergekit": MergeConfig,
            "ner_tapt": NERTrainConfig, "ner_distill": NERTrainConfig}


def test_every_shipped_config_validates_against_its_recipe():
    models = {"ner": NERTrainConfig, "re": RETrainConfig, **example_config_models()}
    recipe_configs = {name for name in example_configs.names() if not name.startswith("accelerate")}
    assert recipe_configs == set(models)  # a new example config needs its model here
    for name, model in models.items():
        if name != "merge_slerp_mergekit":  # mergekit's dialect needs its models: the agreement test runs it
            load_config(model, example_configs.path(name))


def test_the_configs_ship_inside_the_package_only():
    assert not (ROOT / "configs").exists()  # one source of truth: src/adaptlab/resources/configs
    assert example_configs.root().parts[-3:] == ("adaptlab", "resources", "configs")


def test_demo_data_is_valid_and_disjoint():
    train_path, test_path = demo_data()
    train, test = read_records(train_path), read_records(test_path)
    assert len(train) >= 100 and len(test) >= 30
    assert not {r.text for r in train} & {r.text for r in test}
    for record in train + test:
        labels = {s.label for s in record.spans}
        assert labels <= {"SPECIES", "HABITAT", "FEEDING", "BREEDING"}
        for rel in record.relations:
            assert record.spans[rel.head].label == "SPECIES"


def test_cli_help_lists_the_command_groups(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for group in ("data", "ner", "re", "extract", "demo"):
        assert group in out


def test_default_student_is_packaged_offline():
    from adaptlab.ie.models import resolve_student

    path = Path(resolve_student("minilm"))
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()
