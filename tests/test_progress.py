"""The run clock (--max-minutes), the learning curve PNG and the named presets."""
import argparse
import json
import pathlib

import pytest
from PIL import Image

from fcn_tf1 import config as config_lib
from fcn_tf1 import presets, progress, train, train_args
from fcn_tf1.errors import ConfigError, FcnError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "siftflow_sample.h5"


def _result(acc):
    return {"pixel_accuracy": acc, "mean_accuracy": acc / 2, "mean_iou": acc / 3,
            "frequency_weighted_iou": acc / 1.5}


def test_clock_resumes_from_the_restored_checkpoint(tmp_path):
    clock = progress.Progress(tmp_path, step=0)
    assert clock.seconds() < 5
    clock.base_seconds = 100.0  # as if 100 s had been trained already
    clock.checkpoint_saved(10)
    clock.validated(10, _result(0.5))
    clock.base_seconds = 200.0
    clock.checkpoint_saved(20)
    clock.validated(20, _result(0.6))
    # killed after step 20 was saved but restarted from step 10: steps 11..20 are redone
    again = progress.Progress(tmp_path, step=10)
    assert 100.0 <= again.base_seconds < 101.0
    assert [p["step"] for p in again.points] == [10]
    assert not again.out_of_time(0) and not again.out_of_time(10)
    assert again.out_of_time(100.0 / 60)
    saved = json.loads((tmp_path / progress.PROGRESS_NAME).read_text())
    assert set(saved["checkpoints"]) == {"10", "20"}


def test_learning_curve_png(tmp_path):
    points = [dict(step=s, minutes=m, **_result(a))
              for s, m, a in ((100, 1.0, 0.4), (200, 2.5, 0.6), (300, 4.0, 0.7))]
    out = tmp_path / "curve.png"
    progress.plot_curve(points, out, title="test")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (700, 420)
        # not a blank canvas: the lines put colour on it
        assert len(image.convert("RGB").getcolors(1 << 20)) > 20


def test_unreadable_progress_file_names_it(tmp_path):
    (tmp_path / progress.PROGRESS_NAME).write_text('{"checkpoints": [1, 2]')
    with pytest.raises(FcnError, match=r"progress\.json: unreadable progress file"):
        progress.Progress(tmp_path, step=0)


def test_time_budget_stops_saves_validates_and_resumes(tmp_path):
    config = config_lib.RunConfig(
        data=str(SAMPLE), width=4, crop_size=64, batch_size=2, max_steps=400,
        max_minutes=0.02, save_every_steps=0, save_every_secs=0, summary_every_steps=0,
        image_summary_every_steps=0, log_every_steps=0, num_prediction_pngs=0)
    lines = []
    first = train.train(config, tmp_path, log=lines.append)
    assert 0 < first["step"] < 400, "the 1.2 s budget must stop the run early"
    assert any("time budget of 0.02 minutes used up" in line for line in lines)
    assert first["validation"] is not None  # the stopped run is still validated
    assert (tmp_path / progress.CURVE_PNG).is_file()
    saved = json.loads((tmp_path / progress.PROGRESS_NAME).read_text())
    used = saved["checkpoints"][str(first["step"])]
    assert used >= 1.2
    # a larger budget continues the same run from where the clock stopped
    more = config.replace(max_minutes=(used + 1.0) / 60)
    second = train.train(more, tmp_path, explicit={"max_minutes"}, log=lines.append)
    assert first["step"] < second["step"] < 400
    points = json.loads((tmp_path / progress.PROGRESS_NAME).read_text())["points"]
    assert [p["step"] for p in points] == [first["step"], second["step"]]
    assert points[1]["minutes"] > points[0]["minutes"]


def _parse(argv):
    parser = argparse.ArgumentParser()
    train_args.add_arguments(parser)
    args = parser.parse_args(argv)
    train_args.apply_preset(args)
    return args


def test_preset_fills_what_the_command_line_leaves_unset():
    args = _parse(["--preset", "siftflow-cpu-60min", "--data", str(SAMPLE), "--width", "8"])
    config, explicit = train_args.config_from_args(args)
    wanted = presets.options("siftflow-cpu-60min")
    assert config.width == 8  # given explicitly: wins over the preset
    assert config.max_minutes == 60.0 and config.scale_jitter == wanted["scale_jitter"]
    assert config.optimizer == "adam" and config.class_weighting == "none"
    assert {"max_minutes", "optimizer", "width"} <= explicit
    assert args.train_dir == pathlib.Path("runs") / "siftflow-cpu-60min"
    balanced = train_args.config_from_args(
        _parse(["--preset", "siftflow-cpu-60min-balanced", "--data", str(SAMPLE)]))[0]
    assert balanced.class_weighting == "median_frequency"
    # the two recipes differ only in the loss
    assert balanced.replace(class_weighting="none") == config.replace(width=balanced.width)
    # None in a preset is a value (whole images), not "unset": the default crop must not win
    assert wanted["crop_size"] is None and config.crop_size is None
    assert config.scale_jitter is None and config.input_scale == 0.5
    assert "crop_size" in explicit
    cropped = train_args.config_from_args(_parse(
        ["--preset", "siftflow-cpu-60min", "--data", str(SAMPLE), "--crop-size", "96"]))[0]
    assert cropped.crop_size == 96
    assert _parse([]).train_dir == pathlib.Path("runs") / "default"


def test_preset_needs_the_full_dataset():
    with pytest.raises(ConfigError, match="--preset siftflow-cpu-60min is a recipe for the full "
                                          "SIFT Flow: pass --data-dir"):
        _parse(["--preset", "siftflow-cpu-60min"])
    with pytest.raises(ConfigError, match="unknown preset"):
        presets.options("imagenet")
