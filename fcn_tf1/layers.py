"""Graph-building layer helpers for model.py: convolution, batch norm, pooling, upsampling.

Every helper creates its variables with ``tf.compat.v1.get_variable`` in the
current variable scope and builds ops from ``tf.nn`` / core ``tf`` only (no
Keras layers, no ``tf.compat.v1.layers``: they are gone with Keras 3).

API::

    conv2d, batch_norm, max_pool, dropout, dropout_step_counter, smart_cond, he_initializer
    bilinear_kernel_1d(factor), bilinear_kernel(factor, channels)   numpy upsampling kernels
    upsample_learnable(x, factor, name)      FCN's upscore2: a variable, bilinear at start
    upsample_with_kernel(x, kernel, factor, out_channels)   the same with a given kernel
    upsample_fixed(x, factor, name, size)    FCN's final frozen bilinear upsampling
    rescale(x, scale, name)                  antialiased bilinear resampling (input_scale)

Variable names inside a layer's scope are part of the checkpoint contract:

    weights, biases                              convolution kernel and bias
    gamma, beta, moving_mean, moving_variance    batch norm
    weights (in an ``upscore*`` scope)           learnable bilinear upsampling kernel

``is_training`` is a Python bool or a scalar bool tensor everywhere; a Python
bool builds only the branch it selects (no ``tf.cond``).
"""
import os

import numpy as np
import tensorflow as tf

BN_DECAY = 0.9  # short runs on small data: the moving averages must settle in a few hundred steps
BN_EPSILON = 1e-3


def he_initializer():
    """He / variance-scaling initializer for ReLU convolutions (seeded by the graph seed)."""
    return tf.compat.v1.initializers.variance_scaling(
        scale=2.0, mode="fan_in", distribution="truncated_normal")


def smart_cond(pred, true_fn, false_fn):
    """``tf.cond`` when ``pred`` is a tensor; just the chosen branch when it is a Python bool."""
    if isinstance(pred, (bool, np.bool_)):
        return true_fn() if pred else false_fn()
    return tf.cond(pred, true_fn, false_fn)


def conv2d(x, out_channels, kernel_size, name, use_bias=True, initializer=None):
    """Stride-1 SAME convolution with variables ``name/weights`` and ``name/biases``.

    Args:
        x: float32 [B, H, W, C_in] with a static channel count.
        out_channels: int, C_out.
        kernel_size: int k (square k x k kernel).
        name: variable scope of the layer.
        use_bias: add ``biases`` (off when batch norm follows: its beta is the bias).
        initializer: kernel initializer; He (variance scaling, fan in) by default.

    Returns:
        float32 [B, H, W, C_out].
    """
    in_channels = x.shape[-1]
    with tf.compat.v1.variable_scope(name):
        kernel = tf.compat.v1.get_variable(
            "weights", [kernel_size, kernel_size, in_channels, out_channels], tf.float32,
            initializer=initializer or he_initializer())
        y = tf.nn.conv2d(x, kernel, strides=1, padding="SAME")
        if use_bias:
            biases = tf.compat.v1.get_variable(
                "biases", [out_channels], tf.float32,
                initializer=tf.compat.v1.zeros_initializer())
            y = tf.nn.bias_add(y, biases)
    return y


def batch_norm(x, is_training, name):
    """Batch normalisation over [B, H, W] with TF1 moving-average update ops.

    In training the batch statistics normalise ``x`` and the moving averages
    are updated by ops added to ``tf.compat.v1.GraphKeys.UPDATE_OPS`` (the TF1
    contract: the training loop runs them with its train op). In inference the
    moving averages normalise ``x``. With a bool tensor ``is_training`` the
    update ops are still added, but they move the averages by exactly zero when
    it is False (the selected statistics then *are* the moving averages).

    Args:
        x: float32 [B, H, W, C].
        is_training: Python bool or scalar bool tensor.
        name: variable scope (the variables live next to the layer's ``weights``).

    Returns:
        float32 [B, H, W, C].
    """
    channels = x.shape[-1]
    with tf.compat.v1.variable_scope(name):
        gamma = tf.compat.v1.get_variable(
            "gamma", [channels], tf.float32, initializer=tf.compat.v1.ones_initializer())
        beta = tf.compat.v1.get_variable(
            "beta", [channels], tf.float32, initializer=tf.compat.v1.zeros_initializer())
        moving_mean = tf.compat.v1.get_variable(
            "moving_mean", [channels], tf.float32,
            initializer=tf.compat.v1.zeros_initializer(), trainable=False)
        moving_variance = tf.compat.v1.get_variable(
            "moving_variance", [channels], tf.float32,
            initializer=tf.compat.v1.ones_initializer(), trainable=False)

        def train_branch():
            # The fused kernel is several times faster than moments + arithmetic on CPU.
            return tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=BN_EPSILON, is_training=True)

        def inference_branch():
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=moving_mean, variance=moving_variance,
                epsilon=BN_EPSILON, is_training=False)
            return y, tf.identity(moving_mean), tf.identity(moving_variance)

        if is_training is False:
            y, _, _ = inference_branch()
            return y
        y, mean, variance = smart_cond(is_training, train_branch, inference_branch)
        for average, value in ((moving_mean, mean), (moving_variance, variance)):
            update = tf.compat.v1.assign_sub(average, (average - value) * (1.0 - BN_DECAY))
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
    y.set_shape(x.shape)
    return y


def max_pool(x, name):
    """2 x 2 max pooling, stride 2 (inputs are padded to even sizes by the model)."""
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="SAME", name=name)


def dropout_step_counter(is_training):
    """A checkpointed counter that makes dropout masks a function of (seed, training step).

    TF1's stateful random ops restart their stream in every new session, so a
    run resumed from a checkpoint would repeat the first steps' dropout masks
    and diverge from an uninterrupted run. Instead the masks come from
    stateless random ops seeded by (per-layer seed, this counter); the counter
    is a variable (``dropout_counter`` in the current scope, saved with the
    checkpoint) advanced by an op in ``UPDATE_OPS``, i.e. once per training step.

    Args:
        is_training: Python bool or scalar bool tensor; the counter only
            advances in training mode.

    Returns:
        int64 scalar tensor: the counter's value for this step (read before
        the update op increments it).
    """
    counter = tf.compat.v1.get_variable(
        "dropout_counter", [], tf.int64, initializer=tf.compat.v1.zeros_initializer(),
        trainable=False)
    value = tf.identity(counter.read_value() if hasattr(counter, "read_value") else counter)
    with tf.control_dependencies([value]):  # read this step's value first, then advance
        update = tf.compat.v1.assign_add(counter, tf.cast(is_training, tf.int64))
    tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
    return value


def dropout(x, rate, is_training, step):
    """Dropout with ``rate`` when training (masks reproducible per step), identity otherwise.

    Args:
        x: float32 tensor.
        rate: fraction of units dropped.
        is_training: Python bool or scalar bool tensor.
        step: int64 scalar from :func:`dropout_step_counter` (None when
            ``is_training`` is False).

    Returns:
        float32 tensor like ``x``, scaled by 1 / (1 - rate) where kept.
    """
    if is_training is False or rate <= 0:
        return x
    op_seed = tf.compat.v1.get_seed(None)[1]  # from the graph seed: deterministic builds
    if op_seed is None:  # no graph seed: a fresh random stream, as TF1 would do
        op_seed = int.from_bytes(os.urandom(4), "little") >> 1
    seed = tf.stack([tf.constant(op_seed, tf.int64), step])
    return smart_cond(
        is_training,
        lambda: tf.nn.experimental.stateless_dropout(x, rate=rate, seed=seed),
        lambda: tf.identity(x))


def bilinear_kernel_1d(factor):
    """The 1-D bilinear interpolation kernel of length 2 * factor (FCN's ``upsample_filt``).

    Returns:
        float32 numpy [2 * factor]; e.g. factor 2 gives [0.25, 0.75, 0.75, 0.25].
    """
    size = 2 * factor
    center = factor - 0.5  # even kernel size: the centre falls between two taps
    return (1.0 - np.abs(np.arange(size) - center) / factor).astype(np.float32)


def bilinear_kernel(factor, channels):
    """A ``conv2d_transpose`` kernel that upsamples every channel on its own, bilinearly.

    Returns:
        float32 numpy [2 * factor, 2 * factor, channels, channels], diagonal in
        the channel axes (FCN's ``surgery.interp`` initialisation).
    """
    taps = bilinear_kernel_1d(factor)
    kernel = np.zeros((2 * factor, 2 * factor, channels, channels), np.float32)
    kernel[:, :, np.arange(channels), np.arange(channels)] = np.outer(taps, taps)[:, :, None]
    return kernel


def upsample_with_kernel(x, kernel, factor, out_channels):
    """Exact ``factor`` x upsampling of ``x`` by a given transposed-convolution kernel.

    The computation of :func:`upsample_learnable` without its variable: the
    eager forward (eager.py) calls it with a kernel read from a checkpoint.
    The output is aligned like a half-pixel resize. The map is first padded
    by one edge-replicated pixel on every side; the transposed convolution's
    explicit padding then crops 1.5 * factor pixels
    from each side of its full output, leaving exactly [f*h, f*w] (an explicit
    padding instead of a slice afterwards: the slice's gradient was a third of
    the upsampling's cost). With the 2f-tap bilinear kernel the result equals
    ``tf.image.resize(x, [f*h, f*w], 'bilinear')`` everywhere at
    initialisation, borders included (zero padding would darken the border
    rows by up to half).

    Args:
        x: float32 [B, h, w, C_in].
        kernel: float32 [2 * factor, 2 * factor, out_channels, C_in] (a
            ``conv2d_transpose`` filter, e.g. :func:`bilinear_kernel`).
        factor: even int upsampling factor.
        out_channels: int, the channel count of the result.

    Returns:
        float32 [B, factor * h, factor * w, out_channels].
    """
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    shape = tf.shape(x)
    output_shape = tf.stack([shape[0], shape[1] * factor, shape[2] * factor, out_channels])
    crop = 3 * factor // 2  # factor is even (2, 8, 16, 32) so this is exact
    return tf.nn.conv2d_transpose(padded, kernel, output_shape, strides=factor,
                                  padding=[[0, 0], [crop, crop], [crop, crop], [0, 0]])


def upsample_learnable(x, factor, name):
    """Learnable ``factor`` x upsampling initialised to bilinear interpolation (FCN's upscore2).

    Args:
        x: float32 [B, h, w, C] with a static C.
        factor: even int upsampling factor.
        name: variable scope; the kernel is ``name/weights`` [2f, 2f, C, C], no bias.

    Returns:
        float32 [B, f*h, f*w, C].
    """
    channels = int(x.shape[-1])
    with tf.compat.v1.variable_scope(name):
        kernel = tf.compat.v1.get_variable(
            "weights", [2 * factor, 2 * factor, channels, channels], tf.float32,
            initializer=tf.compat.v1.constant_initializer(bilinear_kernel(factor, channels)))
        y = upsample_with_kernel(x, kernel, factor, channels)
    y.set_shape([x.shape[0], None, None, channels])
    return y


def upsample_fixed(x, factor, name, size=None):
    """Fixed bilinear ``factor`` x upsampling (FCN's final upscore: not learned).

    Mathematically this is the transposed convolution with the frozen
    [2f, 2f, C, C] diagonal bilinear kernel (what :func:`upsample_learnable`
    starts as; tests/test_model.py checks the two agree), but a diagonal kernel
    spends C times the multiply-adds on zeros: at 256x256, batch 8 and C = 33
    the dense version was ~23 % of a whole training step's FLOPs and ~330 ms of
    forward + backward on this project's 2-core CPU. The same linear map is
    computed per channel by ``ScaleAndTranslate`` (the op behind
    ``tf.image.resize(..., antialias=True)``) with the triangle (bilinear)
    kernel, scale ``factor`` and no antialiasing: each output pixel samples
    the input at the half-pixel position ``(o + 0.5) / f - 0.5``, and the
    weights of out-of-range taps are dropped and renormalised, which is the
    edge replication of the transposed-convolution version. It also produces
    only the first ``size`` rows and columns, so cropping the stride padding
    away costs no slice (whose gradient alone took ~50 ms per step). Forward +
    backward at [8, 32, 32, 33] -> [8, 256, 256, 33]: ~100 ms against ~330 ms
    for the diagonal transposed convolution (max |difference| 7e-7).

    Args:
        x: float32 [B, h, w, C] with a static C.
        factor: upsampling factor (an even int for the FCN heads; a model run
            at ``input_scale`` s upsamples by the head's factor / s).
        name: name scope.
        size: optional (height, width) ints or scalar int tensors, at most
            (f*h, f*w): the top-left part of the upsampled map to return.

    Returns:
        float32 [B, f*h, f*w, C], or [B, height, width, C] when ``size`` is given.
    """
    channels = int(x.shape[-1])
    with tf.name_scope(name):
        if size is None:
            if factor != int(factor):
                raise ValueError(f"a fractional factor ({factor}) needs an explicit size")
            shape = tf.shape(x)
            size = (shape[1] * int(factor), shape[2] * int(factor))
        y = tf.raw_ops.ScaleAndTranslate(
            images=x, size=tf.stack([size[0], size[1]]),
            scale=tf.constant([factor, factor], tf.float32),
            translation=tf.zeros([2], tf.float32), kernel_type="triangle", antialias=False)
    y.set_shape([x.shape[0], None, None, channels])
    return y


def rescale(x, scale, name):
    """Resamples ``x`` [B, H, W, C] by ``scale`` (bilinear, antialiased) to [B, ceil(sH), ceil(sW), C].

    The same ``ScaleAndTranslate`` op and half-pixel convention as
    :func:`upsample_fixed`, with the triangle kernel widened by 1/scale when
    shrinking (antialiasing, like Pillow's bilinear resize), so a map
    downscaled by s and upsampled by f / s lines up with the input pixel grid.
    """
    with tf.name_scope(name):
        shape = tf.shape(x)
        size = tf.cast(tf.math.ceil(tf.cast(shape[1:3], tf.float32) * scale), tf.int32)
        y = tf.raw_ops.ScaleAndTranslate(
            images=x, size=size, scale=tf.constant([scale, scale], tf.float32),
            translation=tf.zeros([2], tf.float32), kernel_type="triangle", antialias=True)
    y.set_shape([x.shape[0], None, None, x.shape[-1]])
    return y
