from pathlib import Path

import pytest
import yaml

from birdcls.config import TrainConfig, list_recipes, resolve_config
from birdcls.errors import BirdclsError


def test_defaults_are_the_reports_recipe():
    cfg = resolve_config()
    assert (cfg.arch, cfg.size, cfg.bs, cfg.epochs_head, cfg.epochs) == ("tf_efficientnet_lite0", 224, 64, 10, None)
    assert cfg.early_stopping and cfg.save_best and cfg.reduce_lr
    assert resolve_config(recipe="default") == cfg  # the shipped default recipe spells out the same values


def test_epochs_auto_parses_and_round_trips(tmp_path: Path):
    assert resolve_config(overrides={"epochs": "auto"}).epochs is None
    assert resolve_config(overrides={"epochs": "7"}).epochs == 7
    saved = tmp_path / "config.yaml"
    saved.write_text(resolve_config().to_yaml())
    assert "epochs: auto" in saved.read_text()
    assert resolve_config(recipe=saved).epochs is None


def test_precedence_defaults_recipe_overrides(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 3\nsize: 96\n")
    cfg = resolve_config(recipe=recipe, overrides={"size": 128, "lr": None})
    assert cfg.epochs == 3  # from the recipe
    assert cfg.size == 128  # the override wins
    assert cfg.lr == TrainConfig().lr  # None means "flag not given"


def test_shipped_recipes_all_validate():
    names = list_recipes()
    assert {"default", "demo"} <= set(names)
    for name in names:
        resolve_config(recipe=name)


def test_values_from_strings_are_coerced():
    cfg = resolve_config(overrides={"epochs": "4", "lr": "0.01", "augment": "false", "wd": "null"})
    assert cfg.epochs == 4 and cfg.lr == 0.01 and cfg.augment is False and cfg.wd is None


def test_a_gpu_of_several_is_named_as_predict_names_it():
    assert resolve_config(overrides={"device": "cuda:1"}).device == "cuda:1"


@pytest.mark.parametrize("overrides, message", [
    ({"epochs": "ten"}, "'epochs' must be an int"),
    ({"epochs": -1}, "'epochs' must be between 0 and"),
    ({"lr": 0}, "'lr' must be between"),
    ({"device": "tpu"}, "'device' must be auto, cpu, cuda \\(or cuda:N\\) or mps, got 'tpu'"),
    ({"device": "cpu:1"}, "'device' must be auto, cpu, cuda \\(or cuda:N\\) or mps, got 'cpu:1'"),
    ({"epoch": 3}, "unknown config key 'epoch'.*did you mean 'epochs'"),
    ({"augment": "maybe"}, "'augment' must be a bool"),
    ({"augment_style": "heavy"}, "'augment_style' must be one of full, light, shift"),
    ({"tta": True, "flip": False}, "set tta=false, or flip=true"),
    ({"bn_bias_lr_mult": 64}, "bn_bias_lr_mult applies to training from scratch: set pretrained=false"),
    ({"tta_shift": True}, "tta_shift extends tta's mirror average: set tta=true"),
    ({"nesterov": True}, "nesterov applies to opt=sgd: set opt=sgd, or nesterov=false"),
    ({"schedule": "triangle"}, "schedule=triangle applies to training from scratch"),
    ({"pretrained": False, "bn_bias_wd": True}, "bn_bias_wd applies to the BatchNorm-bias group"),
    ({"whiten_bias_epochs": -1}, "'whiten_bias_epochs' must be between 0 and"),
    ({"whiten_bias_epochs": 3}, "whiten_bias_epochs applies to cifar_speedrun's patch-whitening layer"),
    ({"weights": 123}, "'weights' must be a str \\(e.g. 'weights=models/weights.pth' or 'weights=null'\\)"),
])
def test_bad_values_are_rejected_with_the_fix(overrides, message):
    with pytest.raises(BirdclsError, match=message):
        resolve_config(overrides=overrides)


def test_bad_recipe_files(tmp_path: Path):
    with pytest.raises(BirdclsError, match="neither a shipped recipe"):
        resolve_config(recipe="no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(BirdclsError, match="not valid YAML"):
        resolve_config(recipe=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sise: 3\n")
    with pytest.raises(BirdclsError, match="unknown config key 'sise'.*'size'"):
        resolve_config(recipe=unknown)
    twice = tmp_path / "twice.yaml"
    twice.write_text("lr: 0.01\nepochs: 3\nlr: 0.02\n")
    with pytest.raises(BirdclsError, match="key 'lr' is given twice"):
        resolve_config(recipe=twice)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# caf\xe9\nlr: 0.01\n".encode("latin-1"))
    with pytest.raises(BirdclsError, match="not UTF-8 text: save it as UTF-8"):
        resolve_config(recipe=latin)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("lr: fast\n")
    with pytest.raises(BirdclsError, match=f"recipe {wrong}: 'lr' must be"):
        resolve_config(recipe=wrong)


@pytest.mark.parametrize("text, message", [
    ("1: 2\n", "config key 1 in .* is not a name: each line is 'key: value'"),
    ("null: 2\n", "config key None in .* is not a name"),
    ("? [a, b]\n: 1\n", "not valid YAML \\(a key must be a setting's name, line 1, column 3\\)"),
    ("[]\n", "must be a mapping of 'key: value' lines, got list"),
    ("false\n", "must be a mapping of 'key: value' lines, got bool"),
    ("epochs:\t1\n", "not valid YAML \\(found character '\\\\t' that cannot start any token, line 1, column 8\\)"),
])
def test_recipe_files_that_are_not_key_value_lines_are_refused_in_one_line(tmp_path: Path, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(BirdclsError, match=message) as caught:
        resolve_config(recipe=recipe)
    assert "\n" not in str(caught.value)


def test_recipe_files_may_be_empty_or_use_yaml_merge_keys(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set: the defaults\n")
    assert resolve_config(recipe=empty) == resolve_config()
    merged = tmp_path / "merged.yaml"
    merged.write_text("<<: {epochs: 1, lr: 0.01}\nsize: 32\n")
    cfg = resolve_config(recipe=merged)
    assert (cfg.epochs, cfg.lr, cfg.size) == (1, 0.01, 32)


def test_null_clears_a_path_setting_and_none_stays_a_choice():
    """'--set weights=null' means no weights file (it had looked for a file named null); normalize's own
    choice 'none' is not taken for null."""
    assert resolve_config(overrides={"weights": "null"}).weights is None
    assert resolve_config(overrides={"normalize": "none"}).normalize == "none"


def test_resolved_yaml_round_trips(tmp_path: Path):
    cfg = resolve_config(overrides={"epochs": 2, "wd": 0.1})
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert yaml.safe_load(path.read_text())["epochs"] == 2
    assert TrainConfig.from_yaml(path) == cfg
