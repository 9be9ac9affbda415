"""The training loop on the embedded real SIFT Flow sample, with a tiny model.

Real graphs, real checkpoints, real processes: the smoke and signal tests run
``run_train.py`` as a subprocess exactly as a user does.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import graph, h5data, run_setup, train
from fcn_tf1.errors import ConfigError, FcnError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--width", "4", "--crop-size", "64", "--batch-size", "2", "--log-every-steps", "1",
        "--num-prediction-pngs", "2"]


def tiny_config(data, **changes):
    values = dict(data=str(data), width=4, crop_size=64, batch_size=2, max_steps=6,
                  save_every_steps=0, save_every_secs=0, summary_every_steps=2,
                  image_summary_every_steps=3, log_every_steps=0, num_prediction_pngs=2)
    values.update(changes)
    return config_lib.RunConfig(**values)


def run_cli(args, cwd, timeout=300):
    return subprocess.run([sys.executable, str(REPO_ROOT / "run_train.py")] + args, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def quiet(*_args, **_kwargs):
    pass


def test_run_train_smoke(tmp_path):
    """run_train.py for a few steps writes a checkpoint, config, summaries, metrics and PNGs."""
    train_dir = tmp_path / "run"
    proc = run_cli(TINY + ["--max-steps", "4", "--train-dir", str(train_dir)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 4/4" in proc.stdout and "mean IU" in proc.stdout.replace("mean IoU", "mean IU")
    assert tf.train.latest_checkpoint(str(train_dir)).endswith("model.ckpt-4")
    saved = config_lib.load(train_dir)
    assert saved.width == 4 and saved.max_steps == 4
    assert list((train_dir / "train").glob("events.out.tfevents.*"))
    assert list((train_dir / "validation").glob("events.out.tfevents.*"))
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert metrics["step"] == 4 and 0.0 <= metrics["pixel_accuracy"] <= 1.0
    pngs = sorted((train_dir / "predictions").glob("*.png"))
    assert len(pngs) == 2
    assert not (train_dir / ".lock").exists()


def test_tensorboard_reads_overlaid_training_and_validation_curves(default_data, tmp_path):
    """Read back with TensorBoard's own reader: two runs (train/, validation/) sharing the
    tag of the quantity they both measure, so TensorBoard draws the curves on one chart."""
    from tensorboard.backend.event_processing import event_multiplexer
    result = train.train(tiny_config(default_data, max_steps=4, eval_every_steps=2), tmp_path,
                         log=quiet)
    multiplexer = event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    assert set(multiplexer.Runs()) == {"train", "validation"}
    train_tags = multiplexer.Runs()["train"]
    validation_tags = multiplexer.Runs()["validation"]
    assert {"loss/data", "loss/total", "learning_rate",
            "metrics/pixel_accuracy"} <= set(train_tags["scalars"])
    assert {"metrics/pixel_accuracy", "metrics/mean_accuracy", "metrics/mean_iou",
            "metrics/mean_iou_gt_or_predicted", "metrics/frequency_weighted_iou",
            "per_class_iou/sky"} <= set(validation_tags["scalars"])
    assert "images/input_truth_prediction" in train_tags["images"]
    assert {"confusion_matrix", "images/input_truth_prediction/0"} <= set(
        validation_tags["images"])
    # the validation curve: one point per pass (step 2 and the final step 4), the last one
    # the final pass's own number
    points = multiplexer.Scalars("validation", "metrics/pixel_accuracy")
    assert [p.step for p in points] == [2, 4]
    assert points[-1].value == pytest.approx(result["validation"]["pixel_accuracy"])
    iou = multiplexer.Scalars("validation", "per_class_iou/sky")[-1].value
    assert iou == pytest.approx(result["validation"]["per_class"]["sky"]["iou"])
    confusion = multiplexer.Images("validation", "confusion_matrix")[-1]
    assert (confusion.width, confusion.height) == (33 * 8, 33 * 8)


def test_same_seed_same_losses(default_data, tmp_path):
    cfg = tiny_config(default_data, max_steps=20, image_summary_every_steps=0)
    first = train.train(cfg, tmp_path / "a", log=quiet)["losses"]
    second = train.train(cfg, tmp_path / "b", log=quiet)["losses"]
    other = train.train(cfg.replace(seed=1), tmp_path / "c", log=quiet)["losses"]
    assert len(first) == 20
    np.testing.assert_allclose(first, second, rtol=1e-6)
    assert not np.allclose(first, other)


def test_resume_continues_exactly(default_data, tmp_path):
    """Stopped by SIGTERM after k steps and resumed to k+m: the losses of an uninterrupted run."""
    cfg = tiny_config(default_data, max_steps=8, optimizer="momentum", learning_rate=0.01,
                      lr_schedule="poly", image_summary_every_steps=0, log_every_steps=1)
    straight = train.train(cfg, tmp_path / "straight", log=quiet)["losses"]

    def stop_at_step_5(line):
        if line.startswith("step 5/"):
            os.kill(os.getpid(), signal.SIGTERM)

    part = train.train(cfg, tmp_path / "resumed", log=stop_at_step_5)
    assert part["stopped_by"] == "SIGTERM" and part["step"] == 5
    rest = train.train(cfg, tmp_path / "resumed", log=quiet)
    assert rest["step"] == 8 and len(rest["losses"]) == 3
    np.testing.assert_allclose(part["losses"] + rest["losses"], straight, rtol=1e-5)


def test_resume_can_extend_a_finished_run(default_data, tmp_path):
    cfg = tiny_config(default_data, max_steps=3, lr_schedule="constant",
                      image_summary_every_steps=0)
    first = train.train(cfg, tmp_path / "run", log=quiet)["losses"]
    again = train.train(cfg, tmp_path / "run", log=quiet)
    assert again["step"] == 3 and again["losses"] == []
    more = train.train(cfg.replace(max_steps=5), tmp_path / "run", explicit={"max_steps"},
                       log=quiet)["losses"]
    straight = train.train(cfg.replace(max_steps=5), tmp_path / "straight", log=quiet)["losses"]
    np.testing.assert_allclose(first + more, straight, rtol=1e-5)


def test_resume_with_incompatible_config_is_clear(default_data, tmp_path):
    train.train(tiny_config(default_data, max_steps=1), tmp_path, log=quiet)
    with pytest.raises(ConfigError) as info:
        train.train(tiny_config(default_data, width=8, max_steps=2), tmp_path,
                    explicit={"width", "max_steps"}, log=quiet)
    assert "width: run has 4, command asks for 8" in str(info.value)


def test_overfits_one_batch(default_data):
    """The loss falls on one fixed real batch: the graph really learns."""
    cfg = tiny_config(default_data, width=8, learning_rate=3e-3, weight_decay=0.0)
    with h5data.H5Dataset(default_data) as dataset:
        images = np.stack([dataset.image(i) for i in range(2)]).astype(np.float32)[:, :96, :96]
        labels = np.stack([dataset.label(i) for i in range(2)]).astype(np.int64)[:, :96, :96]
    with tf.Graph().as_default():
        net = graph.build_training_graph(cfg.replace(lr_schedule="constant"))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            feed = {net.images: images, net.labels: labels, net.is_training: True}
            values = [session.run([net.train_op, net.data_loss], feed)[1] for _ in range(60)]
    assert values[-1] < 0.3 * values[0], values


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    train_dir = tmp_path / "run"
    ok = run_cli(TINY + ["--max-steps", "2", "--train-dir", str(train_dir)], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = run_cli(TINY + ["--max-steps", "30", "--train-dir", str(train_dir), "--save-every-steps",
                          "1", "--optimizer", "momentum", "--learning-rate", "1e30",
                          "--lr-schedule", "constant"], cwd=tmp_path)
    # --optimizer/--learning-rate differ from the saved run: refused, nothing touched
    assert bad.returncode == 2 and "cannot resume with a different setup" in bad.stderr
    fresh = tmp_path / "diverge"
    bad = run_cli(TINY + ["--max-steps", "30", "--train-dir", str(fresh), "--save-every-steps",
                          "1", "--optimizer", "momentum", "--learning-rate", "1e30",
                          "--lr-schedule", "constant"], cwd=tmp_path)
    assert bad.returncode == 3, bad.stderr[-2000:]
    message = bad.stderr.strip().splitlines()[-1]
    assert message.startswith("fcn-tf1: error: loss is") and "last good one" in message
    latest = tf.train.latest_checkpoint(str(fresh))
    assert latest is not None, "the steps before divergence were saved"
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), f"{name} in {latest} is not finite"


def test_sigterm_saves_and_exits_with_143(tmp_path):
    """A preempted job saves, then exits 128 + SIGTERM so that a scheduler requeues it."""
    train_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "run_train.py")] + TINY
        + ["--max-steps", "100000", "--train-dir", str(train_dir), "--save-every-steps", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # wait until training really runs
            if line.startswith("step 3/"):
                break
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        rest = proc.communicate(timeout=60)[0]
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM == 143, rest[-2000:]
    assert time.monotonic() - sent < 30
    assert "stopped by SIGTERM" in rest
    step = int(tf.train.latest_checkpoint(str(train_dir)).rsplit("-", 1)[1])
    assert step >= 3
    assert not (train_dir / ".lock").exists()


def test_second_trainer_is_refused_and_stale_lock_is_taken(default_data, tmp_path):
    from fcn_tf1 import rundir
    with rundir.TrainDirLock(tmp_path):
        # a lock held by a live process (this one, seen from another lock object)
        (tmp_path / rundir.LOCK_NAME).write_text(f"{os.getppid()} {os.uname().nodename}\n")
        with pytest.raises(FcnError, match="in use by another trainer"):
            train.train(tiny_config(default_data, max_steps=1), tmp_path, log=quiet)
    # a stale lock of a process that is gone does not block
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / rundir.LOCK_NAME).write_text(f"{dead} {os.uname().nodename}\n")
    assert train.train(tiny_config(default_data, max_steps=1), tmp_path, log=quiet)["step"] == 1


def test_unwritable_train_dir_is_refused(default_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(FcnError, match="not writable"):
        train.train(tiny_config(default_data), blocker / "run", log=quiet)


def test_median_frequency_weights_are_computed_once_and_saved(default_data, tmp_path):
    cfg = tiny_config(default_data, max_steps=1, class_weighting="median_frequency",
                      image_summary_every_steps=0)
    result = train.train(cfg, tmp_path, log=quiet)
    weights = np.array(config_lib.load(tmp_path).class_weights)
    assert weights.shape == (33,) and result["config"].class_weights == tuple(weights)
    with h5data.H5Dataset(default_data) as data:
        counts = data.label_counts()
    absent = counts == 0
    assert np.all(weights[absent] == 0) and np.all(weights[~absent] > 0)
    assert np.isclose(np.median(weights[counts > 0]), 1.0, atol=0.5)
    assert np.isfinite(result["losses"]).all()
    # the milder variant: the square roots of the same weights
    with h5data.H5Dataset(default_data) as data:
        indices = list(range(len(data)))
        mild = run_setup.with_class_statistics(cfg.replace(class_weighting="sqrt_median_frequency"),
                                            data, indices, quiet).class_weights
        full = run_setup.with_class_statistics(cfg, data, indices, quiet).class_weights
    np.testing.assert_allclose(mild, np.sqrt(full), rtol=1e-6)
    assert max(mild) < max(full)
    # the global variant: median frequency over the plain class frequencies of all pixels
    with h5data.H5Dataset(default_data) as data:
        strong = run_setup.with_class_statistics(
            cfg.replace(class_weighting="median_frequency_global"), data, indices, quiet
        ).class_weights
    freq = counts / counts.sum()
    expected = np.where(absent, 0.0, np.median(freq[~absent]) / np.where(absent, 1, freq))
    np.testing.assert_allclose(strong, expected, rtol=1e-5)
    assert not np.allclose(strong, full)
