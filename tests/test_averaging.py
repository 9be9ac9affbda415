"""--ema-decay: a moving average of the weights, used by validation, eval, predict and export."""
import json

import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import averaging, config as config_lib, eager, graph, load_run, train
from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1


def tiny(data, **changes):
    values = dict(data=str(data), width=4, crop_size=64, batch_size=2, max_steps=6,
                  save_every_steps=0, save_every_secs=0, summary_every_steps=0,
                  image_summary_every_steps=0, log_every_steps=0, num_prediction_pngs=0,
                  eval_every_steps=0, ema_decay=0.5, optimizer="adam", learning_rate=0.01)
    values.update(changes)
    return config_lib.RunConfig(**values)


def _feed(net, seed):
    rng = np.random.default_rng(seed)
    return {net.images: rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32),
            net.labels: rng.integers(0, 33, (2, 64, 64)), net.is_training: True}


def test_each_step_moves_the_averages_and_validation_swaps_them_in_and_out(default_data):
    config = tiny(default_data)
    with tf.Graph().as_default():
        net = graph.build_training_graph(config)
        variables = net.averager.variables
        names = {v.op.name for v in variables}
        # weights, batch-norm parameters and statistics, score layers, learnable upsamplings
        assert {"fcn/conv1_1/weights", "fcn/conv1_1/gamma", "fcn/conv1_1/moving_mean",
                "fcn/score_fr/weights", "fcn/upscore2/weights"} <= names
        assert not any("dropout_counter" in name or "Adam" in name for name in names)
        averages = [v for v in tf1.global_variables() if v.op.name.endswith(
            "/ExponentialMovingAverage")]
        assert len(averages) == len(variables)
        by_name = {v.op.name: v for v in tf1.global_variables()}
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            for seed in range(3):
                before = session.run([by_name[n + "/ExponentialMovingAverage"] for n in names])
                session.run(net.train_op, _feed(net, seed))
                step = session.run(net.global_step)
                after = session.run([by_name[n + "/ExponentialMovingAverage"] for n in names])
                weights = session.run([by_name[n] for n in names])
                # tf's ExponentialMovingAverage with num_updates = the incremented step
                rate = min(config.ema_decay, (1.0 + step) / (10.0 + step))
                for old, new, weight in zip(before, after, weights):
                    np.testing.assert_allclose(new, rate * old + (1 - rate) * weight,
                                               rtol=1e-5, atol=1e-6)
            # the swap: the averages inside the block, the weights bit for bit after it
            raw = session.run(variables)
            averaged = session.run([by_name[v.op.name + "/ExponentialMovingAverage"]
                                    for v in variables])
            assert any(not np.array_equal(a, b) for a, b in zip(raw, averaged))
            with net.averager.swapped(session):
                for got, want in zip(session.run(variables), averaged):
                    np.testing.assert_array_equal(got, want)
            for got, want in zip(session.run(variables), raw):
                np.testing.assert_array_equal(got, want)


def test_bad_decays_are_refused(default_data):
    for decay in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="ema_decay"):
            tiny(default_data, ema_decay=decay)
    with pytest.raises(ValueError, match="ema decay"):
        averaging.Averager(0.0, None)


def test_distributed_training_refuses_averaging(default_data):
    with tf.Graph().as_default(), pytest.raises(ConfigError, match="--ema-decay"):
        graph.build_training_graph(tiny(default_data), wrap_optimizer=lambda opt: opt)


def test_a_trained_run_is_scored_and_loaded_with_its_averaged_weights(tmp_path, default_data):
    train_dir = tmp_path / "run"
    config = tiny(default_data, val_fraction=0.25, max_steps=8, ema_decay=0.9)
    train.train(config, train_dir, log=lambda *a: None)
    saved = json.loads((train_dir / "metrics.json").read_text())
    assert set(saved["raw_weights"]) == {"pixel_accuracy", "mean_accuracy", "mean_iou",
                                         "mean_iou_gt_or_predicted", "frequency_weighted_iou"}
    checkpoint = tf.train.load_checkpoint(str(tf.train.latest_checkpoint(str(train_dir))))
    raw = checkpoint.get_tensor("fcn/conv2_1/weights")
    average = checkpoint.get_tensor("fcn/conv2_1/weights/ExponentialMovingAverage")
    assert not np.allclose(raw, average)
    with load_run.open_trained(train_dir) as (_, session, _, _):
        loaded = {v.op.name: session.run(v) for v in tf1.global_variables()}
    np.testing.assert_array_equal(loaded["fcn/conv2_1/weights"], average)
    np.testing.assert_array_equal(
        loaded["fcn/conv2_1/moving_variance"],
        checkpoint.get_tensor("fcn/conv2_1/moving_variance/ExponentialMovingAverage"))
    # the TF2 forward pass reads the same averages
    model = eager.EagerFCN.from_run(train_dir)
    np.testing.assert_array_equal(model.weights["fcn/conv2_1/weights"].numpy(), average)
    assert averaging.average_name("fcn/conv2_1/weights") in checkpoint.get_variable_to_shape_map()
