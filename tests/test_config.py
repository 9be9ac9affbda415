"""RunConfig: validation, config.json round trip, resume merging."""
import json

import pytest

from fcn_tf1 import config as config_lib
from fcn_tf1.errors import ConfigError


def test_round_trip(tmp_path):
    cfg = config_lib.RunConfig(width=8, crop_size=None, scale_jitter=(0.75, 1.25), dropout=0.0,
                               input_scale=0.5,
                               class_weights=tuple(float(i) for i in range(33)),
                               prior_correction=0.5, class_priors=(1 / 33,) * 33)
    config_lib.save(cfg, tmp_path)
    assert config_lib.load(tmp_path) == cfg


@pytest.mark.parametrize("changes, words", [
    ({"variant": "fcn2s"}, "variant"),
    ({"batch_size": 0}, "batch_size"),
    ({"crop_size": 7}, "crop_size"),
    ({"scale_jitter": (1.5, 0.5)}, "scale_jitter"),
    ({"class_weights": (1.0, 2.0)}, "class_weights"),
    ({"void_label": 3}, "void_label"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"input_scale": 0.0}, "input_scale"),
    ({"input_scale": 5.0}, "input_scale"),
    ({"input_scale": True}, "input_scale"),
    ({"repeat_factor_threshold": 1.5}, "repeat_factor_threshold"),
    ({"repeat_factor_threshold": -0.1}, "repeat_factor_threshold"),
    ({"prior_correction": -0.5}, "prior_correction"),
    ({"class_priors": (0.5, 0.5)}, "class_priors must be 33"),
    ({"class_priors": (-1.0,) + (0.1,) * 32}, "class_priors must be 33 non-negative"),
    ({"class_priors": (0.0,) * 33}, "not all 0"),
    ({"prior_correction": 11.0}, r"prior_correction=11.0 must be in \[0, 10\]"),
])
def test_invalid_values_are_config_errors(changes, words):
    with pytest.raises(ConfigError, match=words):
        config_lib.RunConfig(**changes)


@pytest.mark.parametrize("text, words", [
    ("{not json", "unreadable config"),
    ('{"width": "16"}', "width must be an integer"),
    ('{"flip": 1}', "flip must be true or false"),
    ('{"widht": 16}', "unknown keys widht"),
    ('{"learning_rate": -1}', "learning_rate"),
    ('[1, 2]', "expected a JSON object"),
    ('{"crop_size": 12.5}', "crop_size must be an integer or null"),
    ('{"dropout": "0.3"}', "dropout must be a number or null"),
])
def test_bad_config_json_names_the_file(tmp_path, text, words):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError) as info:
        config_lib.load(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "config.json") in message and words in message
    assert "\n" not in message


def test_missing_config_json(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        config_lib.load(tmp_path)


def test_resume_merge_keeps_saved_and_takes_overridable():
    saved = config_lib.RunConfig(width=8, max_steps=100)
    requested = config_lib.RunConfig(width=16, max_steps=200)
    merged = config_lib.merge_for_resume(saved, requested, {"max_steps"}, "run")
    assert merged.width == 8 and merged.max_steps == 200
    # a field not given explicitly never overrides the saved run
    assert config_lib.merge_for_resume(saved, requested, set(), "run") == saved


def test_resume_merge_refuses_graph_changes():
    saved = config_lib.RunConfig(width=8, variant="fcn8s")
    requested = config_lib.RunConfig(width=16, variant="fcn32s")
    with pytest.raises(ConfigError) as info:
        config_lib.merge_for_resume(saved, requested, {"width", "variant"}, "runs/x")
    message = str(info.value)
    assert "width: run has 8, command asks for 16" in message
    assert "variant: run has 'fcn8s', command asks for 'fcn32s'" in message


def test_saved_file_is_plain_json(tmp_path):
    config_lib.save(config_lib.RunConfig(), tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    assert values["variant"] == "fcn8s" and values["void_label"] == 255


@pytest.mark.parametrize("argv, field, expected", [
    (["--crop-size", "full"], "crop_size", None),
    (["--crop-size", "96"], "crop_size", 96),
    ([], "crop_size", config_lib.RunConfig().crop_size),
    (["--scale-jitter", "none"], "scale_jitter", None),
    (["--scale-jitter", "0.5,1.5"], "scale_jitter", (0.5, 1.5)),
    (["--dropout", "0"], "dropout", 0.0),
    (["--input-scale", "0.5"], "input_scale", 0.5),
    (["--repeat-factor-threshold", "0.1"], "repeat_factor_threshold", 0.1),
    (["--prior-correction", "0.6"], "prior_correction", 0.6),
    ([], "dropout", None),
])
def test_cli_none_values_are_explicit(argv, field, expected):
    # "--crop-size full" asks for whole images: it must not fall back to the default crop
    # (nor be left out of the explicit overrides of a resumed run).
    import argparse
    from fcn_tf1 import train_args
    parser = argparse.ArgumentParser()
    train_args.add_arguments(parser)
    args = parser.parse_args(argv)
    cfg, explicit = train_args.config_from_args(args)
    assert getattr(cfg, field) == expected
    assert (field in explicit) == bool(argv)
