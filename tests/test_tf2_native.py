"""TF2-native cross-check: a graph-mode checkpoint, re-run eagerly, gives the same logits.

The graph model (tf.compat.v1: placeholders, Session, Saver) is trained for a
few steps on the real sample, so batch norm's moving averages and every
weight have moved; fcn_tf1.eager reads the checkpoint by variable name and
runs the same forward pass as plain TF2 code, eagerly and as a tf.function.
"""
import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import batches, config as config_lib, eager, load_run, model, train

TOLERANCE = 1e-5  # absolute on logits of order 1; scaled up with larger logits (float32)


def assert_logits_equal(got, expected):
    atol = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, default_data):
    train_dir = tmp_path_factory.mktemp("graph_run")
    cfg = config_lib.RunConfig(data=str(default_data), width=4, crop_size=64, batch_size=2,
                               max_steps=3, learning_rate=0.01, save_every_steps=0,
                               save_every_secs=0, log_every_steps=0, summary_every_steps=0,
                               image_summary_every_steps=0, num_prediction_pngs=0)
    train.train(cfg, train_dir, log=lambda *a: None)
    return train_dir


@pytest.fixture(scope="module")
def real_images(default_data):
    images, _, _ = next(batches.iterate_batches(default_data, [0, 5, 9], 3))
    return images  # float32 [3, 256, 256, 3], RGB 0..255


def graph_logits(train_dir, images):
    with load_run.open_trained(train_dir) as (_, session, net, _):
        return session.run(net.logits, {net.images: images})


def test_checkpoint_is_read_by_name(trained_run):
    checkpoint = tf.train.latest_checkpoint(str(trained_run))
    listed = dict(tf.train.list_variables(checkpoint))
    weights = eager.load_weights(checkpoint)
    assert "fcn/conv1_1/weights" in weights and "fcn/upscore_pool4/weights" in weights
    assert "fcn/dropout_counter" in listed and "fcn/dropout_counter" not in weights
    assert not [name for name in weights if "Adam" in name]  # optimizer slots stay behind
    for name, variable in weights.items():
        assert list(variable.shape) == listed[name], name


@pytest.mark.parametrize("height, width", [(256, 256), (200, 250)])
def test_eager_logits_equal_graph_logits(trained_run, real_images, height, width):
    """256x256 and a size that is not a multiple of 32, on real SIFT Flow images."""
    images = real_images[:, :height, :width]
    expected = graph_logits(trained_run, images)
    net = eager.EagerFCN.from_run(trained_run)
    traced = net(tf.constant(images)).numpy()  # tf.function
    plain = eager.forward(net.weights, images, net.variant).numpy()  # eager, op by op
    assert expected.shape == traced.shape == plain.shape == (3, height, width, 33)
    assert np.ptp(expected) > 0.1, "trained logits must not be trivially constant"
    assert_logits_equal(traced, expected)
    assert_logits_equal(plain, expected)
    np.testing.assert_array_equal(traced.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("variant, backbone, input_scale",
                         [(v, "compact", 1.0) for v in model.VARIANTS]
                         + [("fcn8s", "vgg_bn", 1.0), ("fcn8s", "compact", 0.5)])
def test_other_variants_from_a_saver_checkpoint(tmp_path, real_images, variant, backbone,
                                                input_scale):
    """Random (non-zero) weights everywhere, saved by a plain tf.compat.v1.train.Saver."""
    images = real_images[:2, :96, :80]
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        inputs = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        logits = model.inference(inputs, variant=variant, backbone=backbone, width=4,
                                 input_scale=input_scale)
        variables = tf.compat.v1.global_variables()
        rng = np.random.default_rng(0)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for variable in variables:  # zero score layers would make the check trivial
                value = session.run(variable)
                if "moving_variance" in variable.op.name:
                    value = rng.uniform(0.5, 2.0, value.shape)
                else:
                    value = value + rng.normal(0.0, 0.02, value.shape)
                session.run(variable.assign(value.astype(np.float32)))
            expected = session.run(logits, {inputs: images})
            checkpoint = tf.compat.v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    got = eager.EagerFCN(checkpoint, variant=variant,
                         input_scale=input_scale)(tf.constant(images)).numpy()
    assert np.ptp(expected) > 0.1
    assert_logits_equal(got, expected)
