"""Contract checks: example configs validate, the shipped demo data is well formed, the CLI answers."""

from pathlib import Path

import pytest

from adaptlab.config import load_config
from adaptlab.data.records import read_records
from adaptlab.recipes.demo import demo_data
from adaptlab.recipes.ner import NERTrainConfig
from adaptlab.recipes.relations import RETrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name,model", [("ner.yaml", NERTrainConfig), ("re.yaml", RETrainConfig)])
def test_example_configs_validate(name, model):
    cfg = load_config(model, ROOT / "configs" / name)
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

    return {"synth_biospecies.yaml": SynthConfig, "zero_shot_ner.yaml": ZeroShotConfig,
            "merge_chat_vector.yaml": MergeConfig, "merge_ties.yaml": MergeConfig,
            "merge_search.yaml": SearchConfig, "fractal.yaml": FractalEvalConfig,
            "fractal_sft.yaml": FractalSFTConfig, "lm_prepare.yaml": PrepareConfig, "lm_cpt.yaml": LMTrainConfig,
            "lm_sft.yaml": LMTrainConfig, "lm_evaluate.yaml": LMEvalConfig,
            "domain_instruct.yaml": DomainInstructConfig, "cls.yaml": ClsTrainConfig,
            "multitask.yaml": MultitaskConfig}


def test_every_example_config_validates():
    models = {"ner.yaml": NERTrainConfig, "re.yaml": RETrainConfig, **example_config_models()}
    assert {p.name for p in (ROOT / "configs").glob("*.yaml")} == set(models)
    for name, model in models.items():
        load_config(model, ROOT / "configs" / name)


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
