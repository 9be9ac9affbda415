"""The run clock (--max-minutes), the learning curve PNG and the named presets."""
import argparse
import json
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcn_tf1 import config as config_lib
from fcn_tf1 import graph, learning_curve, presets, run_clock, train, train_args
from fcn_tf1.errors import ConfigError, FcnError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "siftflow_sample.h5"


def _result(acc):
    return {"pixel_accuracy": acc, "mean_accuracy": acc / 2, "mean_iou": acc / 3,
            "frequency_weighted_iou": acc / 1.5}


def test_clock_resumes_from_the_restored_checkpoint(tmp_path):
    clock = run_clock.RunClock(tmp_path, step=0)
    assert clock.seconds() < 5
    clock.base_seconds = 100.0  # as if 100 s had been trained already
    clock.checkpoint_saved(10)
    clock.validated(10, _result(0.5))
    clock.base_seconds = 200.0
    clock.checkpoint_saved(20)
    clock.validated(20, _result(0.6))
    # killed after step 20 was saved but restarted from step 10: steps 11..20 are redone
    again = run_clock.RunClock(tmp_path, step=10)
    assert 100.0 <= again.base_seconds < 101.0
    assert [p["step"] for p in again.points] == [10]
    assert not again.out_of_time(0) and not again.out_of_time(10)
    assert again.out_of_time(100.0 / 60)
    saved = json.loads((tmp_path / run_clock.PROGRESS_NAME).read_text())
    assert set(saved["checkpoints"]) == {"10", "20"}


def test_learning_curve_png(tmp_path):
    points = [dict(step=s, minutes=m, **_result(a))
              for s, m, a in ((100, 1.0, 0.4), (200, 2.5, 0.6), (300, 4.0, 0.7))]
    out = tmp_path / "curve.png"
    learning_curve.plot_curve(points, out, title="test")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (700, 420)
        # not a blank canvas: the lines put colour on it
        assert len(image.convert("RGB").getcolors(1 << 20)) > 20


def test_unreadable_progress_file_names_it(tmp_path):
    (tmp_path / run_clock.PROGRESS_NAME).write_text('{"checkpoints": [1, 2]')
    with pytest.raises(FcnError, match=r"progress\.json: unreadable progress file"):
        run_clock.RunClock(tmp_path, step=0)


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
    assert (tmp_path / run_clock.CURVE_PNG).is_file()
    saved = json.loads((tmp_path / run_clock.PROGRESS_NAME).read_text())
    used = saved["checkpoints"][str(first["step"])]
    assert used >= 1.2
    # a larger budget continues the same run from where the clock stopped
    more = config.replace(max_minutes=(used + 1.0) / 60)
    second = train.train(more, tmp_path, explicit={"max_minutes"}, log=lines.append)
    assert first["step"] < second["step"] < 400
    points = json.loads((tmp_path / run_clock.PROGRESS_NAME).read_text())["points"]
    assert [p["step"] for p in points] == [first["step"], second["step"]]
    assert points[1]["minutes"] > points[0]["minutes"]


def test_poly_time_learning_rate_follows_the_fed_time_fraction():
    config = config_lib.RunConfig(width=4, learning_rate=0.01, poly_power=0.9,
                                  lr_schedule="poly_time", max_minutes=10.0)
    fractions = [0.0, 0.25, 0.5, 0.99, 1.0, 1.7]
    expected = [0.01 * (1.0 - min(f, 1.0)) ** 0.9 for f in fractions]
    for build in (graph.build_training_graph,
                  lambda cfg: graph.build_training_graph(cfg, ["/cpu:0", "/cpu:0"])):
        with tf.Graph().as_default():
            net = build(config)
            with tf.compat.v1.Session() as session:
                got = [session.run(net.learning_rate, {net.time_fraction: f}) for f in fractions]
                with pytest.raises(tf.errors.InvalidArgumentError, match="time_fraction"):
                    session.run(net.learning_rate)  # never silently at a default rate
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    with tf.Graph().as_default():  # the step schedules need no such input
        assert graph.build_training_graph(config.replace(lr_schedule="poly")).time_fraction is None
    with pytest.raises(ConfigError, match="poly_time.*needs max_minutes > 0"):
        config.replace(max_minutes=0.0)
    with pytest.raises(ConfigError, match="poly_power=-1.0 must be >= 0"):
        config.replace(poly_power=-1.0)


def test_poly_time_run_decays_to_the_end_of_its_budget(tmp_path):
    config = config_lib.RunConfig(
        data=str(SAMPLE), width=4, crop_size=64, batch_size=2, max_steps=100000,
        max_minutes=0.2, lr_schedule="poly_time", learning_rate=1e-3, save_every_steps=0,
        save_every_secs=0, summary_every_steps=0, image_summary_every_steps=0,
        log_every_steps=1, num_prediction_pngs=0, val_fraction=0.2)
    lines = []
    result = train.train(config, tmp_path, log=lines.append)
    rates = [float(m.group(1)) for m in map(re.compile(r"^step \d+/\d+ .* lr (\S+) ").match, lines)
             if m]
    assert any("time budget of 0.2 minutes used up" in line for line in lines)
    assert len(rates) == result["step"] >= 5
    assert rates[0] == pytest.approx(1e-3, rel=0.2)  # the clock starts just before step 1
    assert all(b <= a for a, b in zip(rates, rates[1:]))
    assert rates[-1] < 0.3e-3, "the last steps of the budget run near the end of the decay"
    # the log's eta counts down to the budget, not to the 100000 steps
    etas = [line.split("eta ")[1] for line in lines if " eta " in line]
    assert etas and all(re.fullmatch(r"0m[01]\ds", eta) for eta in etas)
    # a max_steps cap that ends the run long before its budget is said, not silent
    lines = []
    train.train(config.replace(max_steps=2, max_minutes=10.0), tmp_path / "capped",
                log=lines.append)
    assert any("max_steps 2 reached with" in line and "decay stopped early" in line
               for line in lines)


def _parse(argv):
    parser = argparse.ArgumentParser()
    train_args.add_arguments(parser)
    return parser.parse_args(argv)


def test_preset_fills_what_the_command_line_leaves_unset():
    args = _parse(["--preset", "siftflow-cpu-60min", "--data", str(SAMPLE), "--width", "8"])
    config, explicit = train_args.config_from_args(args)
    wanted = presets.options("siftflow-cpu-60min")
    assert config.width == 8  # given explicitly: wins over the preset
    assert config.max_minutes == 60.0 and config.scale_jitter == wanted["scale_jitter"]
    # a time budget, not a step count: the decay follows the minutes, the steps only cap it
    assert config.lr_schedule == "poly_time" and config.max_steps == 100000
    assert config.optimizer == "adam" and config.class_weighting == "none"
    assert {"max_minutes", "optimizer", "width"} <= explicit
    assert train_args.train_dir_of(args) == pathlib.Path("runs") / "siftflow-cpu-60min"
    balanced = train_args.config_from_args(
        _parse(["--preset", "siftflow-cpu-60min-balanced", "--data", str(SAMPLE)]))[0]
    assert balanced.class_weighting == "median_frequency"
    # the two recipes differ only in the loss, the learning rate (each its measured one) and
    # how the prediction's prior correction is chosen at the end (both average their weights):
    # the best validation mean IU, or the largest keeping 79 % pixel accuracy
    assert (config.learning_rate, balanced.learning_rate) == (5e-4, 1e-3)
    assert (config.prior_correction, balanced.prior_correction) == (0.0, 0.6)
    assert (config.prior_correction_floor, balanced.prior_correction_floor) == (0.0, 0.79)
    assert (config.prior_correction_choice, balanced.prior_correction_choice) == \
        ("mean_iou", "largest")
    assert config.chooses_prior_correction and balanced.chooses_prior_correction
    assert config.ema_decay == balanced.ema_decay == 0.999
    # the Lovasz-softmax term is measured on the plain loss only
    assert (config.lovasz_weight, balanced.lovasz_weight) == (1.0, 0.0)
    assert config.repeat_factor_threshold == balanced.repeat_factor_threshold == 0.1
    assert balanced.replace(class_weighting="none", learning_rate=5e-4, prior_correction=0.0,
                            prior_correction_floor=0.0, prior_correction_choice="mean_iou",
                            lovasz_weight=1.0) == \
        config.replace(width=balanced.width)
    # None in a preset is a value (whole images), not "unset": the default crop must not win
    assert wanted["crop_size"] is None and config.crop_size is None
    assert config.scale_jitter is None and config.input_scale == 0.5
    assert "crop_size" in explicit
    cropped = train_args.config_from_args(_parse(
        ["--preset", "siftflow-cpu-60min", "--data", str(SAMPLE), "--crop-size", "96"]))[0]
    assert cropped.crop_size == 96
    assert train_args.train_dir_of(_parse([])) == pathlib.Path("runs") / "default"


def test_preset_needs_the_full_dataset():
    with pytest.raises(ConfigError, match="--preset siftflow-cpu-60min is a recipe for the full "
                                          "SIFT Flow: pass --data-dir"):
        train_args.config_from_args(_parse(["--preset", "siftflow-cpu-60min"]))
    with pytest.raises(ConfigError, match="unknown preset"):
        presets.options("imagenet")
