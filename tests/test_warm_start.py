"""--init-from: a new run starts from another run's weights (FCN's staged 32s -> 16s -> 8s)."""
import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import (averaging, cli, config as config_lib, graph, h5data, model, train,
                     warm_start)
from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1


def tiny(data, **changes):
    values = dict(data=str(data), width=4, crop_size=64, batch_size=2, max_steps=4,
                  save_every_steps=0, save_every_secs=0, summary_every_steps=0,
                  image_summary_every_steps=0, log_every_steps=0, num_prediction_pngs=0,
                  eval_every_steps=0)
    values.update(changes)
    return config_lib.RunConfig(**values)


@pytest.fixture(scope="module")
def run32(tmp_path_factory, default_data):
    train_dir = tmp_path_factory.mktemp("fcn32s")
    train.train(tiny(default_data, variant="fcn32s"), train_dir, log=lambda *a: None)
    return train_dir


def _endpoints(config, checkpoint, images, init_from=None):
    """score_fr and logits of ``config``'s net, restored from ``checkpoint`` or initialised
    from ``init_from`` as a new run would be."""
    with tf.Graph().as_default():
        tf1.set_random_seed(config.seed)
        x = tf1.placeholder(tf.float32, [None, None, None, 3])
        logits, ends = model.inference_endpoints(
            x, num_classes=33, variant=config.variant, width=config.width, is_training=False)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            if init_from is None:
                tf1.train.Saver().restore(session, checkpoint)
            else:
                warm_start.initialise(session, init_from,
                                      warm_start.plan(init_from, tf1.global_variables()))
            values = session.run({"logits": logits, "score_fr": ends["score_fr"],
                                  "pool4": ends.get("score_pool4", ends["score_fr"])},
                                 {x: images})
            weights = {v.op.name: session.run(v) for v in tf1.global_variables()}
    return values, weights


def test_fcn16s_from_fcn32s_starts_where_fcn32s_ended(run32, default_data):
    with h5data.H5Dataset(default_data) as data:
        images = np.stack([data.image(i) for i in range(2)]).astype(np.float32)
    source = warm_start.source_checkpoint(run32)
    c32 = tiny(default_data, variant="fcn32s")
    old, old_weights = _endpoints(c32, source, images)
    new, new_weights = _endpoints(c32.replace(variant="fcn16s"), None, images, init_from=source)
    # every variable the two nets share is copied bit for bit; the new skip starts at zero
    shared = set(old_weights) & set(new_weights)
    assert {"fcn/conv1_1/weights", "fcn/score_fr/weights", "fcn/conv1_1/moving_mean"} <= shared
    for name in shared:
        np.testing.assert_array_equal(new_weights[name], old_weights[name], err_msg=name)
    assert not new_weights["fcn/score_pool4/weights"].any()
    assert not new_weights["fcn/score_pool4/biases"].any()
    # so the coarse scores are exactly FCN-32s's and the skip adds nothing ...
    np.testing.assert_array_equal(new["score_fr"], old["score_fr"])
    assert not new["pool4"].any()
    # ... and the logits are FCN-32s's scores upsampled 2x then 16x instead of 32x in one go:
    # half-pixel bilinear steps do not compose exactly (the 2x grid has its knots between
    # the coarse ones), so they agree closely, not bit for bit
    with tf.Graph().as_default():
        coarse = old["score_fr"].shape[1:3]
        full = old["logits"].shape[1:3]
        two_steps = tf.image.resize(tf.image.resize(old["score_fr"], [2 * n for n in coarse]),
                                    full)
        one_step = tf.image.resize(old["score_fr"], full)
        with tf1.Session() as session:
            two_steps, one_step = session.run([two_steps, one_step])
    np.testing.assert_allclose(new["logits"], two_steps, atol=1e-4)
    np.testing.assert_allclose(old["logits"], one_step, atol=1e-4)
    assert (new["logits"].argmax(-1) == old["logits"].argmax(-1)).mean() > 0.9


def test_init_from_through_the_command_line(run32, tmp_path, capsys):
    run16 = tmp_path / "fcn16s"
    tiny_words = ["--width", "4", "--crop-size", "64", "--batch-size", "2", "--max-steps", "2",
                  "--eval-every-steps", "0", "--num-prediction-pngs", "0"]
    assert cli.main(["train", "--variant", "fcn16s", "--init-from", str(run32),
                     "--train-dir", str(run16)] + tiny_words) == 0
    out = capsys.readouterr().out
    assert "initialised from" in out and "3 new (fcn/score_pool4/weights" in out
    assert config_lib.load(run16).init_from == str(run32)
    # resuming ignores it, and says so
    assert cli.main(["train", "--variant", "fcn16s", "--init-from", str(run32),
                     "--train-dir", str(run16)] + tiny_words[:-4] + ["--max-steps", "3"]) == 0
    resumed = capsys.readouterr().out
    assert f"--init-from {run32} ignored: the run resumes from its own checkpoint" in resumed
    assert "initialised from" not in resumed


def test_init_from_an_averaging_run_starts_from_its_averages(default_data, tmp_path):
    """The weights come from the old run's moving averages (what it was scored with), and
    a new run that averages too starts its averages there; the optimizer state stays fresh."""
    old = tmp_path / "averaged"
    train.train(tiny(default_data, ema_decay=0.9, optimizer="adam", learning_rate=0.01), old,
                log=lambda *a: None)
    source = warm_start.source_checkpoint(old)
    reader = tf.train.load_checkpoint(source)
    entries = reader.get_variable_to_shape_map()
    weights = "fcn/conv1_1/weights"
    assert not np.array_equal(reader.get_tensor(weights),
                              reader.get_tensor(f"{weights}/ExponentialMovingAverage"))
    for ema_decay in (0.0, 0.9):
        with tf.Graph().as_default():
            net = graph.build_training_graph(tiny(default_data, ema_decay=ema_decay,
                                                  optimizer="adam"))
            planned = warm_start.plan(source, tf1.global_variables())
            with tf1.Session() as session:
                session.run(tf1.global_variables_initializer())
                warm_start.initialise(session, source, planned)
                values = {v.op.name: session.run(v) for v in tf1.global_variables()}
                assert session.run(net.global_step) == 0
        model_names = [n for n in values if n.startswith("fcn/") and not averaging.is_average(n)
                       and not warm_start.is_optimizer_state(n)]
        assert weights in model_names and "fcn/conv1_1/moving_mean" in model_names
        for name in model_names:
            average = f"{name}/ExponentialMovingAverage"
            expected = reader.get_tensor(average if average in entries else name)
            np.testing.assert_array_equal(values[name], expected, err_msg=name)
            if ema_decay:
                np.testing.assert_array_equal(values.get(average, expected), expected,
                                              err_msg=average)
        assert planned.averaged == sum(f"{n}/ExponentialMovingAverage" in entries
                                       for n in model_names)
        assert planned.averaged > 20 and not any(
            warm_start.is_optimizer_state(v.op.name) for _, v in planned.copied)
        assert "from the moving averages of its weights" in warm_start.describe(source, planned)


def test_init_from_refuses_what_does_not_fit(run32, default_data, tmp_path, capsys):
    source = warm_start.source_checkpoint(run32)
    with tf.Graph().as_default():
        graph.build_inference_graph(tiny(default_data, width=8))
        with pytest.raises(ConfigError, match="match by name but not by shape, e.g. fcn/"):
            warm_start.plan(source, tf1.global_variables())
    with tf.Graph().as_default():
        tf1.get_variable("something/else", [3])
        with pytest.raises(ConfigError, match="none of this model's variables"):
            warm_start.plan(source, tf1.global_variables())
    assert cli.main(["train", "--width", "8", "--init-from", str(run32), "--train-dir",
                     str(tmp_path / "wide"), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not by shape" in err[0]
    assert cli.main(["train", "--init-from", str(tmp_path / "nothing"), "--train-dir",
                     str(tmp_path / "x"), "--max-steps", "1"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_the_best_checkpoint_is_kept_apart_and_used_by_eval(default_data, tmp_path, capsys):
    """Validation every 2 steps: TRAIN_DIR/best holds the step of the best mean IU with its
    metrics, the rotation of the periodic checkpoints (1 kept) never deletes it, and
    ``eval --checkpoint best`` scores exactly it."""
    import json
    from fcn_tf1 import checkpoints, run_clock
    run = tmp_path / "run"
    config = tiny(default_data, max_steps=8, eval_every_steps=2, save_every_steps=1,
                  max_to_keep=1, learning_rate=0.05)
    train.train(config, run, log=lambda *a: None)
    points = json.loads((run / run_clock.PROGRESS_NAME).read_text())["points"]
    best_point = max(points, key=lambda p: p["mean_iou"])  # the first of equals wins
    assert [p["step"] for p in points] == [2, 4, 6, 8]
    kept = json.loads((run / "best" / "metrics.json").read_text())
    assert kept["step"] == best_point["step"] and kept["metric"] == "mean_iou"
    assert kept["mean_iou"] == pytest.approx(best_point["mean_iou"])
    assert checkpoints.find(run, "best") == str(run / "best" / f"model.ckpt-{kept['step']}")
    assert checkpoints.find(run, "latest") == str(run / "model.ckpt-8")
    assert sorted(p.name for p in run.glob("model.ckpt-*.index")) == ["model.ckpt-8.index"]
    out = tmp_path / "best.json"
    assert cli.main(["eval", "--train-dir", str(run), "--checkpoint", "best",
                     "--out", str(out)]) == 0
    assert json.loads(out.read_text())["mean_iou"] == pytest.approx(kept["mean_iou"])
    # a resumed run knows the best so far: a worse pass does not replace it
    with tf.Graph().as_default():
        tf1.get_variable("anything", [1])
        keeper = checkpoints.BestKeeper(config, None, run, log=lambda *a: None)
        assert keeper.best == pytest.approx(kept["mean_iou"])
        keeper.consider(9, {"mean_iou": kept["mean_iou"] - 0.01})
    assert json.loads((run / "best" / "metrics.json").read_text())["step"] == kept["step"]
    capsys.readouterr()
    assert cli.main(["eval", "--train-dir", str(tmp_path / "none"), "--checkpoint",
                     "best"]) == 2
