"""model.py / layers.py: shapes, bilinear upsampling, gradients, batch norm, weight decay."""
import contextlib
import importlib.metadata

import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import layers, losses, model

C = 33
# Keras 3 has its own .weights.h5 layout; Keras 2 (TF <= 2.15) writes the legacy one
KERAS_3 = int(importlib.metadata.version("keras").split(".")[0]) >= 3

# Keras' get_weights() on numpy 2 warns about the copy keyword; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@contextlib.contextmanager
def seeded_graph(seed=0):
    """A fresh default graph with a graph-level seed.

    Always seeded: once anything in the process has called
    ``tf.config.experimental.enable_op_determinism()`` (train.py does), random
    ops without a seed raise.
    """
    with tf.Graph().as_default() as graph:
        tf.compat.v1.set_random_seed(seed)
        yield graph


def placeholders():
    images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
    is_training = tf.compat.v1.placeholder_with_default(False, [])
    return images, is_training


def random_images(shape, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, shape).astype(np.float32)


@pytest.mark.parametrize("backbone, width, sizes", [
    ("compact", 4, [(2, 250, 333), (1, 64, 64), (1, 31, 45)]),
    ("vgg_bn", 2, [(1, 64, 64), (1, 31, 45)]),
    ("vgg16", None, [(1, 40, 50), (2, 64, 64)]),
])
def test_output_shapes_every_variant(backbone, width, sizes):
    # One graph: AUTO_REUSE shares the backbone between the heads (one initialisation).
    with seeded_graph():
        images, is_training = placeholders()
        logits = {v: model.inference(images, C, v, backbone, width or 32, is_training)
                  for v in model.VARIANTS}
        for tensor in logits.values():
            assert tensor.shape.as_list() == [None, None, None, C]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for batch, height, width_px in sizes:
                feed = {images: random_images((batch, height, width_px, 3))}
                for training in (False, True):
                    feed[is_training] = training
                    for variant, value in session.run(logits, feed).items():
                        assert value.shape == (batch, height, width_px, C), variant
                        assert np.all(np.isfinite(value))


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.5])
def test_input_scale_runs_the_net_at_that_resolution_and_returns_full_size_logits(scale):
    with seeded_graph():
        images, is_training = placeholders()
        logits, endpoints = model.inference_endpoints(images, C, "fcn8s", "compact", 2,
                                                      is_training, input_scale=scale)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for height, width_px in [(256, 256), (77, 101)]:
                feed = {images: random_images((2, height, width_px, 3)), is_training: True}
                value, net_input = session.run([logits, endpoints["input"]], feed)
                assert value.shape == (2, height, width_px, C)
                assert np.all(np.isfinite(value))
                # the backbone's input: ceil(scale * size), padded to a multiple of 32
                expected = [-(-int(np.ceil(scale * n)) // 32) * 32 for n in (height, width_px)]
                assert list(net_input.shape[1:3]) == expected
    with seeded_graph(), pytest.raises(ValueError, match="input_scale"):
        model.inference(tf.zeros([1, 32, 32, 3]), width=2, input_scale=0.0)


def test_rescale_is_pillows_antialiased_bilinear_resize():
    """The input rescaling uses Pillow's filter and pixel grid (what scale jitter uses)."""
    from PIL import Image
    image = (random_images((1, 60, 84, 3), seed=4) * 0.2
             + np.linspace(0, 200, 84, dtype=np.float32)[None, None, :, None]).astype(np.uint8)
    with seeded_graph():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        half, three_quarters = layers.rescale(x, 0.5, "half"), layers.rescale(x, 0.75, "tq")
        with tf.compat.v1.Session() as session:
            got = session.run([half, three_quarters], {x: image.astype(np.float32)})
    for value, size in zip(got, [(42, 30), (63, 45)]):
        expected = np.asarray(Image.fromarray(image[0]).resize(size, Image.BILINEAR), np.float32)
        assert value.shape[1:3] == expected.shape[:2]
        # Pillow rounds to uint8; the filters, edges and pixel centres are the same
        assert np.abs(value[0] - expected).max() <= 1.0


def test_input_scale_half_then_head_upsampling_keeps_a_linear_ramp_in_place():
    """Downscale by s, upsample by f / s: the pixel grid lines up (no shift of the labels)."""
    ramp = np.broadcast_to(np.arange(64, dtype=np.float32)[None, None, :, None], (1, 48, 64, 3))
    with seeded_graph():
        x = tf.constant(ramp)
        small = layers.rescale(x, 0.5, "down")
        back = layers.upsample_fixed(small, 2.0, "up", size=(48, 64))
        with tf.compat.v1.Session() as session:
            got = session.run(back)
    # interior (away from the renormalised borders) is the ramp itself
    np.testing.assert_allclose(got[0, :, 4:-4, 0], ramp[0, :, 4:-4, 0], atol=1e-4)


@pytest.mark.parametrize("backbone, convs", [("compact", 8), ("vgg_bn", 13)])
def test_backbone_depths(backbone, convs):
    with seeded_graph():
        model.inference(tf.zeros([1, 32, 32, 3]), backbone=backbone, width=2)
        kernels = [v.op.name for v in tf.compat.v1.global_variables()
                   if v.op.name.startswith("fcn/conv") and v.op.name.endswith("/weights")]
    assert len(kernels) == convs, kernels


def test_static_shape_is_kept_and_python_bool_training():
    with seeded_graph():
        logits = model.inference(tf.zeros([2, 40, 50, 3]), width=2, is_training=True)
        assert logits.shape.as_list() == [2, 40, 50, C]
        assert logits.dtype == tf.float32
        # uint8 images straight from the file are cast.
        assert model.inference(tf.zeros([1, 40, 50, 3], tf.uint8), width=2).shape[1:3] == [40, 50]
        # Python False builds no batch-norm update ops at all.
        n_updates = len(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS))
        model.inference(tf.zeros([2, 40, 50, 3]), width=2, is_training=False)
        assert len(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)) == n_updates > 0
    with seeded_graph(), pytest.raises(ValueError, match="variant"):
        model.inference(tf.zeros([1, 32, 32, 3]), variant="fcn2s")


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_bilinear_upsampling_matches_image_resize(factor):
    yy, xx = np.mgrid[0:5, 0:6].astype(np.float32)
    smooth = np.stack([np.sin(yy / 2) + 0.3 * xx, np.cos(xx / 3) * yy, 0.1 * xx * yy], -1)[None]
    with seeded_graph():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        learnable = layers.upsample_learnable(x, factor, "up")
        fixed = layers.upsample_fixed(x, factor, "fixed")
        reference = tf.image.resize(x, tf.shape(x)[1:3] * factor, "bilinear")
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            got = session.run([learnable, fixed, reference], {x: np.concatenate([smooth, -smooth])})
    assert got[0].shape == (2, 5 * factor, 6 * factor, 3)
    # Borders included: the edge-replicated padding makes it exact everywhere.
    np.testing.assert_allclose(got[0], got[2], atol=1e-5)
    np.testing.assert_allclose(got[1], got[2], atol=1e-5)


def test_fixed_upsampling_equals_the_frozen_diagonal_transposed_convolution():
    """upsample_fixed (ScaleAndTranslate) is FCN's frozen bilinear deconvolution, crop included."""
    x_np = np.random.RandomState(3).randn(2, 4, 5, 6).astype(np.float32)
    with seeded_graph():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 6])
        kernel = tf.constant(layers.bilinear_kernel(8, 6))
        deconv = layers.upsample_with_kernel(x, kernel, 8, 6)
        fixed = layers.upsample_fixed(x, 8, "fixed")
        cropped = layers.upsample_fixed(x, 8, "cropped", size=(27, 33))
        grads = [tf.gradients(tf.reduce_sum(y * y), x)[0] for y in (deconv, fixed)]
        with tf.compat.v1.Session() as session:
            got = session.run([deconv, fixed, cropped] + grads, {x: x_np})
    assert got[1].shape == (2, 32, 40, 6) and got[2].shape == (2, 27, 33, 6)
    np.testing.assert_allclose(got[1], got[0], atol=1e-5)
    np.testing.assert_allclose(got[2], got[0][:, :27, :33], atol=1e-5)
    np.testing.assert_allclose(got[4], got[3], rtol=1e-5, atol=1e-4)


def test_bilinear_kernel_is_caffe_upsample_filt():
    np.testing.assert_allclose(layers.bilinear_kernel_1d(2), [0.25, 0.75, 0.75, 0.25])
    kernel = layers.bilinear_kernel(2, 3)
    assert kernel.shape == (4, 4, 3, 3)
    assert not kernel[:, :, 0, 1].any() and kernel[:, :, 2, 2].sum() == pytest.approx(4.0)


def test_gradients_reach_every_trainable_variable():
    with seeded_graph(1):
        images, is_training = placeholders()
        labels = tf.compat.v1.placeholder(tf.int64, [None, None, None])
        logits = model.inference(images, width=4, is_training=is_training)
        loss = losses.loss(logits, labels)
        variables = tf.compat.v1.trainable_variables()
        grads = tf.gradients(loss, variables)
        assert all(g is not None for g in grads), [v.op.name for v, g in zip(variables, grads) if g is None]
        step = tf.compat.v1.train.GradientDescentOptimizer(0.1).apply_gradients(zip(grads, variables))
        label_values = np.random.RandomState(0).randint(0, C, (2, 48, 40))
        label_values[:, :5] = 255
        feed = {images: random_images((2, 48, 40, 3)), labels: label_values, is_training: True}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(step, feed)  # the score layers start at zero and block gradients at step 0
            values = session.run(grads, feed)
    silent = [v.op.name for v, g in zip(variables, values) if not np.any(g) or not np.all(np.isfinite(g))]
    assert not silent


def test_batch_norm_modes_and_update_ops():
    with seeded_graph():
        images, is_training = placeholders()
        logits = model.inference(images, width=2, is_training=is_training)
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        moving_mean = tf.compat.v1.get_collection(
            tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, "fcn/conv1_1/moving_mean")[0]
        feed = {images: random_images((2, 32, 32, 3))}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            first = session.run(logits, feed)
            session.run(update_ops, feed)  # inference mode: the averages do not move
            np.testing.assert_array_equal(session.run(moving_mean), 0.0)
            np.testing.assert_array_equal(session.run(logits, feed), first)
            session.run(update_ops, {**feed, is_training: True})
            assert np.any(session.run(moving_mean) != 0.0)
    assert len(update_ops) == 2 * 10 + 1  # mean and variance of 8 convs + fc6 + fc7; dropout counter


def test_dropout_masks_follow_the_checkpointed_step_counter():
    """Masks depend on (seed, counter), so a run resumed from a checkpoint repeats none."""
    with seeded_graph():
        images, is_training = placeholders()
        _, endpoints = model.inference_endpoints(images, width=2, is_training=is_training)
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        counter = tf.compat.v1.get_collection(
            tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, "fcn/dropout_counter")[0]
        feed = {images: random_images((2, 32, 32, 3)), is_training: True}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            first, _ = session.run([endpoints["fc7"], update_ops], feed)
            second, _ = session.run([endpoints["fc7"], update_ops], feed)
            assert session.run(counter) == 2
            session.run(counter.assign(0))
            again = session.run(endpoints["fc7"], feed)
            session.run(update_ops, {**feed, is_training: False})
            assert session.run(counter) == 0  # only training steps advance it
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


def test_dropout_rate_zero_removes_dropout_and_a_rate_changes_the_masks():
    """dropout=0 trains without masks (same fc7 at every step); a rate is applied as given."""
    def fc7_twice(dropout):
        with seeded_graph():
            images, is_training = placeholders()
            _, endpoints = model.inference_endpoints(images, width=2, is_training=is_training,
                                                     dropout=dropout)
            update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
            feed = {images: random_images((2, 32, 32, 3)), is_training: True}
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                first, _ = session.run([endpoints["fc7"], update_ops], feed)
                second = session.run(endpoints["fc7"], feed)
        return first, second

    first, second = fc7_twice(0.0)
    np.testing.assert_array_equal(first, second)
    first, second = fc7_twice(0.9)
    assert not np.array_equal(first, second)
    kept = np.mean(first != 0)  # after ReLU about half are zero already; 0.9 drops most of the rest
    assert 0.0 < kept < 0.2
    with pytest.raises(ValueError, match="dropout"):
        model.inference(tf.zeros([1, 32, 32, 3]), width=2, dropout=1.0)


def test_initialisation_is_deterministic_given_the_graph_seed():
    def initial_values(seed):
        with seeded_graph(seed):
            model.inference(tf.zeros([1, 32, 32, 3]), width=2)
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                return session.run(tf.compat.v1.trainable_variables())
    first, again, other = initial_values(3), initial_values(3), initial_values(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_weight_decay_covers_conv_kernels_only():
    with seeded_graph():
        model.inference(tf.zeros([1, 32, 32, 3]), width=2)
        decay = model.weight_decay_loss()
        names = [v.op.name for v in tf.compat.v1.trainable_variables()]
        kernels = [v for v in tf.compat.v1.trainable_variables()
                   if v.op.name.endswith("/weights") and "upscore" not in v.op.name]
        assert "fcn/upscore2/weights" in names and "fcn/score_fr/weights" in names
        assert "fcn/score_fr/weights" in [v.op.name for v in kernels]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            got, values = session.run([decay, kernels])
    assert got == pytest.approx(sum(float((v.astype(np.float64) ** 2).sum()) / 2 for v in values), rel=1e-5)


# --- VGG16 weights from Keras files -------------------------------------------------------

VGG_SIZE = 64


def write_legacy_vgg16(path, keras_model, weight_style="released"):
    """A weight file in the legacy Keras HDF5 layout of the downloadable VGG16 files.

    ``released``: datasets ``block1_conv1/block1_conv1_W_1:0`` and ``..._b_1:0`` as in
    vgg16_weights_tf_dim_ordering_tf_kernels(_notop).h5; ``keras2``: Keras 2's
    ``block1_conv1/block1_conv1/kernel:0`` nesting. Layers without weights (input,
    pools, flatten) have an empty ``weight_names``, as Keras writes them.
    """
    names = ["input_1"] + [layer.name for layer in keras_model.layers[1:]]
    write_legacy_layers(path, [(name, layer.get_weights())
                               for name, layer in zip(names, keras_model.layers)], weight_style)


def write_legacy_layers(path, layers, weight_style="released"):
    """The legacy Keras HDF5 layout of ``layers``: [(layer name, [kernel, bias] or [])]."""
    import h5py
    with h5py.File(path, "w") as h5file:
        h5file.attrs["layer_names"] = np.array([name.encode("utf8") for name, _ in layers])
        h5file.attrs["backend"] = b"tensorflow"
        h5file.attrs["keras_version"] = b"2.0.8"
        for name, values in layers:
            group = h5file.create_group(name)
            if weight_style == "released":
                weight_names = [f"{name}_W_1:0", f"{name}_b_1:0"][:len(values)]
            else:
                weight_names = [f"{name}/kernel:0", f"{name}/bias:0"][:len(values)]
            group.attrs["weight_names"] = np.array([w.encode("utf8") for w in weight_names],
                                                   dtype="S" if weight_names else "f8")
            for weight_name, value in zip(weight_names, values):
                group.create_dataset(weight_name, data=value)


@pytest.fixture(scope="module")
def keras_vgg16(tmp_path_factory):
    """A randomly initialised Keras VGG16 (no top, 64x64), with random biases, and its files."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    net = keras.applications.VGG16(weights=None, include_top=False,
                                   input_shape=(VGG_SIZE, VGG_SIZE, 3))
    rng = np.random.RandomState(0)
    for layer in net.layers:
        if layer.get_weights():
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.uniform(-0.1, 0.1, bias.shape).astype(np.float32)])
    folder = tmp_path_factory.mktemp("vgg16")
    files = {"released": folder / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
             "keras2": folder / "keras2_notop.h5",
             "keras3": folder / "vgg16_notop.weights.h5"}
    write_legacy_vgg16(files["released"], net, "released")
    write_legacy_vgg16(files["keras2"], net, "keras2")
    if KERAS_3:  # Keras 2 writes its own legacy layout under this name, not the Keras 3 one
        net.save_weights(files["keras3"])
    images = random_images((2, VGG_SIZE, VGG_SIZE, 3), seed=5)
    probe = keras.Model(net.input, [net.get_layer("block3_pool").output,
                                    net.get_layer("block5_conv3").output])
    # Keras' VGG16 expects 'caffe' preprocessing; our graph does it itself from raw RGB.
    pool3, conv5_3 = probe(keras.applications.vgg16.preprocess_input(images.copy()))
    weights = {layer.name: layer.get_weights() for layer in net.layers if layer.get_weights()}
    return {"files": files, "images": images, "pool3": np.asarray(pool3),
            "conv5_3": np.asarray(conv5_3), "weights": weights}


def test_vgg16_loader_reproduces_keras_activations(keras_vgg16):
    from fcn_tf1 import vgg16_weights
    with seeded_graph():
        images = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
        _, endpoints = model.inference_endpoints(images, backbone="vgg16")
        fc6 = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, "fcn/fc6/biases")[0]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(fc6.assign(tf.fill(tf.shape(fc6), 0.5)))
            loaded = model.load_vgg16_weights(session, keras_vgg16["files"]["released"])
            pool3, conv5_3 = session.run([endpoints["pool3"], endpoints["conv5_3"]],
                                         {images: keras_vgg16["images"]})
            # A _notop file leaves fc6/fc7 as they were.
            np.testing.assert_array_equal(session.run(fc6), 0.5)
            # The other layouts load the very same values.
            conv3_2 = tf.compat.v1.get_collection(
                tf.compat.v1.GraphKeys.GLOBAL_VARIABLES, "fcn/conv3_2/")
            for style in ("keras2", "keras3") if KERAS_3 else ("keras2",):
                session.run([v.assign(tf.zeros_like(v)) for v in conv3_2])
                vgg16_weights.load_vgg16_weights(session, keras_vgg16["files"][style])
                kernel, bias = session.run(conv3_2)
                np.testing.assert_array_equal(kernel, keras_vgg16["weights"]["block3_conv2"][0])
                np.testing.assert_array_equal(bias, keras_vgg16["weights"]["block3_conv2"][1])
    assert len(loaded) == 26 and "fcn/conv5_3/weights" in loaded
    for ours, keras_value in ((pool3, keras_vgg16["pool3"]), (conv5_3, keras_vgg16["conv5_3"])):
        assert ours.shape == keras_value.shape
        np.testing.assert_allclose(ours, keras_value, atol=1e-4 * np.abs(keras_value).max())


def test_loader_turns_keras_dense_layers_into_our_fc_convolutions(tmp_path):
    """fc1 -> fc6, fc2 -> fc7: vgg16_weights reshapes Keras' Flatten + Dense kernels so that
    VALID convolutions with the loaded variables give Keras' outputs. On a small stand-in
    (pool5 of 2 x 3 x 4, 5 units) with VGG16's layer names; the conv layers are 1 x 1 x 1."""
    keras = pytest.importorskip("keras")
    from fcn_tf1 import vgg16_weights
    keras.utils.set_random_seed(1)
    net = keras.Sequential([keras.Input((2, 3, 4)), keras.layers.Flatten(),
                            keras.layers.Dense(5, name="fc1"), keras.layers.Dense(5, name="fc2")])
    x = random_images((3, 2, 3, 4))
    expected = np.asarray(net(x))
    rng = np.random.RandomState(2)
    convs = [(name, [rng.randn(1, 1, 1, 1).astype(np.float32), np.zeros(1, np.float32)])
             for name in vgg16_weights.CONV_LAYERS]
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    write_legacy_layers(path, convs + [(layer.name, layer.get_weights())
                                       for layer in net.layers if layer.get_weights()])
    shapes = {"fc6": ([2, 3, 4, 5], [5]), "fc7": ([1, 1, 5, 5], [5])}
    with seeded_graph():
        variables = {}
        for scope in vgg16_weights.KERAS_TO_FCN.values():
            kernel_shape, bias_shape = shapes.get(scope, ([1, 1, 1, 1], [1]))
            with tf.compat.v1.variable_scope(f"fcn/{scope}"):
                variables[scope] = (tf.compat.v1.get_variable("weights", kernel_shape),
                                    tf.compat.v1.get_variable("biases", bias_shape))
        fc6 = tf.nn.conv2d(x, variables["fc6"][0], 1, "VALID") + variables["fc6"][1]
        fc7 = tf.nn.conv2d(fc6, variables["fc7"][0], 1, "VALID") + variables["fc7"][1]
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            loaded = vgg16_weights.load_vgg16_weights(session, path)
            got = session.run(fc7)
            conv1_1 = session.run(variables["conv1_1"][0])
    assert len(loaded) == 30 and "fcn/fc6/weights" in loaded and "fcn/fc7/biases" in loaded
    np.testing.assert_array_equal(conv1_1, convs[0][1][0])
    np.testing.assert_allclose(got[:, 0, 0], expected, rtol=1e-5, atol=1e-5)


def write_fake_vgg16(path, bad_layer=None, missing_layer=None):
    """Tiny legacy-layout file: every VGG16 conv layer with the right shapes except ``bad_layer``."""
    import h5py
    from fcn_tf1.vgg16_weights import CONV_LAYERS
    with h5py.File(path, "w") as h5file:
        names = [n for n in CONV_LAYERS if n != missing_layer]
        h5file.attrs["layer_names"] = np.array([n.encode() for n in names])
        previous = 3
        for name, out in zip(CONV_LAYERS, [64, 64, 128, 128] + [256] * 3 + [512] * 6):
            shape = (3, 3, previous, out) if name != bad_layer else (3, 3, previous, out // 2)
            previous = out
            if name == missing_layer:
                continue
            group = h5file.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()])
            group.create_dataset(f"{name}_W_1:0", shape=shape, dtype="f4")  # not written: no data
            group.create_dataset(f"{name}_b_1:0", shape=(out,), dtype="f4")


def test_vgg16_loader_rejects_mismatched_files(tmp_path):
    from fcn_tf1 import vgg16_weights
    from fcn_tf1.errors import FcnError
    missing, wrong, not_h5 = tmp_path / "missing.h5", tmp_path / "wrong.h5", tmp_path / "text.h5"
    write_fake_vgg16(missing, missing_layer="block3_conv2")
    write_fake_vgg16(wrong, bad_layer="block4_conv1")
    not_h5.write_text("not hdf5")
    with seeded_graph():
        model.inference(tf.zeros([1, 32, 32, 3]), backbone="vgg16")
        with pytest.raises(FcnError, match=r"missing\.h5: not a Keras VGG16 weight file: layer block3_conv2 is missing"):
            vgg16_weights.vgg16_init_fn(missing)
        with pytest.raises(FcnError, match=r"wrong\.h5: layer block4_conv1 has kernel \(3, 3, 256, 256\)"):
            vgg16_weights.vgg16_init_fn(wrong)
        with pytest.raises(FcnError, match=r"text\.h5: cannot read"):
            vgg16_weights.vgg16_init_fn(not_h5)
    with seeded_graph():
        model.inference(tf.zeros([1, 32, 32, 3]), width=2)  # compact: nothing to load into
        with pytest.raises(FcnError, match="no VGG16 variables"):
            vgg16_weights.vgg16_init_fn(wrong)


@pytest.mark.slow
def test_vgg16_full_file_fc_layers_match_keras(tmp_path):
    """The full (with top) file: fc6/fc7 at the centre of a 224x224 image equal Keras' fc1/fc2."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(2)
    net = keras.applications.VGG16(weights=None)
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    write_legacy_vgg16(path, net)
    images = random_images((1, 224, 224, 3), seed=3)
    probe = keras.Model(net.input, net.get_layer("fc2").output)
    expected = np.asarray(probe(keras.applications.vgg16.preprocess_input(images.copy())))
    del net, probe
    with seeded_graph():
        _, endpoints = model.inference_endpoints(tf.constant(images), backbone="vgg16")
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            assert len(model.load_vgg16_weights(session, path)) == 30
            fc7 = session.run(endpoints["fc7"])
    # pool5 is 7x7: the SAME 7x7 fc6 at the centre sees exactly the whole map, as fc1 does.
    np.testing.assert_allclose(fc7[0, 3, 3], expected[0], atol=1e-4 * np.abs(expected).max())
