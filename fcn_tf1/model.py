"""inference(): the fully convolutional network, raw RGB in, unscaled per-pixel logits out.

    inference(images, num_classes=33, variant='fcn8s', backbone='compact',
              width=32, is_training=False, dropout=None,
              input_scale=1.0)                      -> logits float32 [B, H, W, C]
    inference_endpoints(...)                          -> (logits, {name: tensor})
    network_input(images, backbone, input_scale)      -> (padded backbone input, H, W)
    VARIANTS, BACKBONES (fcn_tf1.config), FINAL_UPSAMPLING {variant: factor}
    SKIP_POOLS {variant: pools fused}, SKIP_UPSAMPLINGS (the 2x upsampling before each)
    skips(variant)                                    -> ((pool, upsampling), ...) in order
    weight_decay_loss(scope='fcn')                    -> scalar: sum of l2_loss of conv kernels
    load_vgg16_weights(session, h5_path)              (see vgg16_weights.py)

The skip architecture follows Long, Shelhamer & Darrell, "Fully Convolutional
Networks for Semantic Segmentation": a 1x1 ``score_fr`` layer on fc7 (stride
32), ``score_pool4`` (stride 16) and ``score_pool3`` (stride 8). FCN-32s
upsamples score_fr 32x; FCN-16s adds the 2x-upsampled score_fr to score_pool4
and upsamples 16x; FCN-8s fuses once more with score_pool3 and upsamples 8x.
``'fcn4s'`` goes one step further than the paper, fusing ``score_pool2``
(stride 4) after a third learned 2x upsampling (``upscore_pool3``): at
``input_scale`` 0.5 FCN-8s's finest score map is 1/16 of the image, and
FCN-4s's 1/8, the paper's FCN-8s resolution. The skip layers are 1x1
convolutions, so each extra fusion costs little (on SIFT Flow's 60-minute
preset it cost 2 % of the img/s and gained nothing: docs/RESULTS.md). As in
the paper the 2x upsamplings (``upscore2``, ``upscore_pool4``; ``upscore_pool3``) are
learnable transposed convolutions initialised to bilinear interpolation and
the final one is fixed bilinear interpolation (the paper's frozen bilinear
deconvolution, computed per channel: see layers.upsample_fixed). Score layers start at zero
(as FCN did), so the net starts from uniform class probabilities.

Arbitrary image sizes: the normalised input is zero-padded at the bottom and
right to a multiple of 32 (zero is the mean colour after normalisation), so
every stride-s map is exactly the padded size / s, the skip maps line up
without offsets, and the final upsampling returns exactly the [H, W] part. Batch,
height and width may all be unknown when the graph is built.

Input scale: with ``input_scale`` s != 1 the (normalised) images are first
resampled by s (antialiased bilinear, layers.rescale) and the final fixed
upsampling goes up by the head's factor / s, straight back to [H, W]: the net
runs at s times the resolution (s = 0.5: the backbone sees a whole 256x256
scene for what a 128 px crop costs it), the logits and the loss stay at the
input's resolution.

Backbones:

* ``'compact'`` (default): a CPU-sized VGG-style net. Stages of 3x3 conv + batch
  norm + ReLU with (1, 1, 2, 2, 2) convs and width, 2w, 4w, 8w, 8w channels,
  each followed by 2x2 max pooling (pool3 /8, pool4 /16, pool5 /32), then
  fc6 (3x3, 16w) and fc7 (1x1, 16w), both conv + BN + ReLU + dropout 0.3 in
  training. Input: (RGB - ImageNet mean) / ImageNet std.
* ``'vgg_bn'``: the same with VGG16's depth, (2, 2, 3, 3, 3) convs per stage
  (13 convs instead of 8); at width 64 its convolutions are VGG16's with
  batch norm. About 1.7x the compact net's multiply-adds at width 32.
* ``'vgg16'``: VGG16 exactly (conv1_1..conv5_3, no batch norm), fc6 as a 7x7
  conv with 4096 channels and fc7 as 1x1 4096, dropout 0.5 in training. fc6
  uses SAME padding (the paper used VALID after padding the input by 100
  pixels); SAME keeps every size working. The input is preprocessed exactly
  as Keras' VGG16 weights expect ("caffe" mode: RGB -> BGR, minus
  [103.939, 116.779, 123.68]), so ``load_vgg16_weights`` gives the ImageNet
  features. ``width`` is ignored.

Variables live under ``tf.compat.v1.variable_scope('fcn', reuse=AUTO_REUSE)``:
``fcn/conv1_1/weights``, ``fcn/conv1_1/biases`` (vgg16) or
``fcn/conv1_1/{gamma,beta,moving_mean,moving_variance}`` (compact),
``fcn/fc6/...``, ``fcn/score_fr/...``, ``fcn/upscore2/weights``, ... Calling
inference() twice in one graph shares the variables (e.g. FCN-32s and
FCN-8s heads on one backbone).

Training-mode side effects go to ``tf.compat.v1.GraphKeys.UPDATE_OPS`` (run
them with the train op): the batch norm moving averages and the increment of
``fcn/dropout_counter``, an int64 variable that seeds the (stateless) dropout
masks together with the graph seed, so a run resumed from a checkpoint draws
exactly the masks an uninterrupted run would. With ``is_training=False`` (the
Python bool) neither is built. Random initialisation follows the graph seed
(``tf.compat.v1.set_random_seed``); set one when op determinism is enabled.
"""
import numpy as np
import tensorflow as tf

from fcn_tf1 import layers
from fcn_tf1.config import BACKBONES, MAX_INPUT_SCALE, MIN_INPUT_SCALE, VARIANTS
from fcn_tf1.siftflow import NUM_CLASSES

# ImageNet statistics of RGB pixel values in 0..255.
IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
IMAGENET_STD_RGB = (58.393, 57.12, 57.375)
# Keras' VGG16 'caffe' preprocessing: the weights were trained on BGR minus this mean.
VGG16_MEAN_BGR = (103.939, 116.779, 123.68)

VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_FC_CHANNELS = 4096
# convs per stage of the width-scaled backbones with batch norm
CONVS_PER_STAGE = {"compact": (1, 1, 2, 2, 2), "vgg_bn": (2, 2, 3, 3, 3)}
COMPACT_STAGE_MULTIPLIERS = (1, 2, 4, 8, 8)
COMPACT_FC_MULTIPLIER = 16
DROPOUT_RATE = {"vgg16": 0.5, "compact": 0.3, "vgg_bn": 0.3}
STRIDE = 32  # the input is padded to a multiple of this (pool5's stride)
# The pools each head fuses, coarsest first, and the learned 2x upsampling before each fusion.
SKIP_POOLS = {"fcn32s": (), "fcn16s": ("pool4",), "fcn8s": ("pool4", "pool3"),
              "fcn4s": ("pool4", "pool3", "pool2")}
SKIP_UPSAMPLINGS = ("upscore2", "upscore_pool4", "upscore_pool3")
# The stride of each head's last score map, i.e. its final fixed upsampling factor.
FINAL_UPSAMPLING = {variant: STRIDE // 2 ** len(pools) for variant, pools in SKIP_POOLS.items()}


def skips(variant):
    """The head's fusions in order: (pool name, name of the 2x upsampling before it) pairs."""
    return tuple(zip(SKIP_POOLS[variant], SKIP_UPSAMPLINGS))


def inference(images, num_classes=NUM_CLASSES, variant="fcn8s", backbone="compact", width=32,
              is_training=False, dropout=None, input_scale=1.0):
    """Builds the FCN and returns unscaled logits at the input resolution.

    Args:
        images: float32 [B, H, W, 3], raw RGB in 0..255 (other dtypes are cast);
            B, H, W may be unknown.
        num_classes: int, number of classes C (33 for SIFT Flow).
        variant: 'fcn32s', 'fcn16s', 'fcn8s' or 'fcn4s'.
        backbone: 'compact', 'vgg_bn' or 'vgg16'.
        width: channel multiplier of the compact and vgg_bn backbones (ignored for vgg16).
        is_training: Python bool or scalar bool tensor (e.g. a
            ``placeholder_with_default(False, [])``): batch statistics and
            dropout when true, moving averages and no dropout when false.
        dropout: rate of the dropout after fc6 and fc7 in training; None
            means the backbone's default (``DROPOUT_RATE``), 0 none at all.
        input_scale: the resolution the net runs at, relative to the input
            (see the module docstring); 1.0 = the input's own.

    Returns:
        float32 [B, H, W, num_classes], unscaled logits (no softmax applied).
    """
    logits, _ = inference_endpoints(images, num_classes, variant, backbone, width, is_training,
                                    dropout, input_scale)
    return logits


def inference_endpoints(images, num_classes=NUM_CLASSES, variant="fcn8s", backbone="compact", width=32,
                        is_training=False, dropout=None, input_scale=1.0):
    """Like :func:`inference`, also returning the intermediate maps.

    Returns:
        (logits, endpoints): logits as :func:`inference`; endpoints maps names
        ('input', 'conv1_1'.., 'pool1'..'pool5', 'fc6', 'fc7', 'score_fr', the
        variant's 'score_pool4', 'score_pool3', 'score_pool2', 'upscore') to
        float32 [B, h, w, c] tensors of the padded input (post-ReLU activations
        for the convs);
        'upscore' is already cropped to [B, H, W, C].
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    rate = DROPOUT_RATE[backbone] if dropout is None else float(dropout)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    input_scale = float(input_scale)
    if not MIN_INPUT_SCALE <= input_scale <= MAX_INPUT_SCALE:
        raise ValueError(f"input_scale must be in [{MIN_INPUT_SCALE}, {MAX_INPUT_SCALE}], "
                         f"got {input_scale!r}")
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.float32:  # e.g. uint8 straight from the HDF5 file
        images = tf.cast(images, tf.float32)
    if images.shape.rank is not None and (images.shape.rank != 4 or images.shape[-1] not in (3, None)):
        raise ValueError(f"images must be [batch, height, width, 3], got {images.shape}")
    images.set_shape([None, None, None, 3])

    with tf.compat.v1.variable_scope("fcn", reuse=tf.compat.v1.AUTO_REUSE):
        x, height, width_px = network_input(images, backbone, input_scale)
        endpoints = {"input": x}
        if backbone == "vgg16":
            _vgg16_backbone(x, is_training, rate, endpoints)
        else:
            _compact_backbone(x, CONVS_PER_STAGE[backbone], width, is_training, rate, endpoints)
        upscore = _fcn_head(endpoints, num_classes, variant, (height, width_px), input_scale)
        logits = tf.identity(upscore, name="logits")
    logits.set_shape(images.shape[:3].concatenate([num_classes]))
    return logits, endpoints


def _preprocess(images, backbone):
    """Raw RGB 0..255 -> the input the backbone's weights expect."""
    if backbone == "vgg16":
        bgr = tf.reverse(images, axis=[-1])
        return bgr - tf.constant(VGG16_MEAN_BGR, tf.float32)
    return (images - tf.constant(IMAGENET_MEAN_RGB)) / tf.constant(IMAGENET_STD_RGB)


def network_input(images, backbone, input_scale=1.0):
    """Float RGB 0..255 [B, H, W, 3] -> (the backbone's input, H, W); shared with eager.py.

    Preprocessed for ``backbone``, resampled by ``input_scale`` and zero-padded
    at the bottom/right to a multiple of STRIDE; H and W (dynamic scalars) are
    the input's own size, which the final upsampling returns to.
    """
    x = _preprocess(images, backbone)
    shape = tf.shape(x)
    height, width = shape[1], shape[2]
    if input_scale != 1.0:
        x = layers.rescale(x, input_scale, "input_scale")
    return _pad_to_stride(x), height, width


def _pad_to_stride(x):
    """Zero-pads bottom/right to a multiple of STRIDE (dynamic sizes)."""
    shape = tf.shape(x)
    pad_h = (STRIDE - shape[1] % STRIDE) % STRIDE
    pad_w = (STRIDE - shape[2] % STRIDE) % STRIDE
    padded = tf.pad(x, tf.stack([[0, 0], [0, pad_h], [0, pad_w], [0, 0]]))
    padded.set_shape([None, None, None, 3])
    return padded


def _vgg16_backbone(x, is_training, dropout, endpoints):
    for stage, channels in enumerate(VGG16_STAGES, start=1):
        for index, out_channels in enumerate(channels, start=1):
            name = f"conv{stage}_{index}"
            x = tf.nn.relu(layers.conv2d(x, out_channels, 3, name), name=name)
            endpoints[name] = x
        x = layers.max_pool(x, f"pool{stage}")
        endpoints[f"pool{stage}"] = x
    x = tf.nn.relu(layers.conv2d(x, VGG16_FC_CHANNELS, 7, "fc6"), name="fc6")
    step = None if is_training is False else layers.dropout_step_counter(is_training)
    endpoints["fc6"] = x = layers.dropout(x, dropout, is_training, step)
    x = tf.nn.relu(layers.conv2d(x, VGG16_FC_CHANNELS, 1, "fc7"), name="fc7")
    endpoints["fc7"] = layers.dropout(x, dropout, is_training, step)


def _conv_bn_relu(x, channels, kernel_size, name, is_training):
    # No conv bias: batch norm's beta takes its place.
    y = layers.conv2d(x, channels, kernel_size, name, use_bias=False)
    y = layers.batch_norm(y, is_training, name)
    return tf.nn.relu(y, name=name)


def _compact_backbone(x, convs_per_stage, width, is_training, dropout, endpoints):
    if int(width) < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    width = int(width)
    for stage, (convs, mult) in enumerate(
            zip(convs_per_stage, COMPACT_STAGE_MULTIPLIERS), start=1):
        for index in range(1, convs + 1):
            name = f"conv{stage}_{index}"
            x = _conv_bn_relu(x, mult * width, 3, name, is_training)
            endpoints[name] = x
        x = layers.max_pool(x, f"pool{stage}")
        endpoints[f"pool{stage}"] = x
    fc_channels = COMPACT_FC_MULTIPLIER * width
    step = None if is_training is False else layers.dropout_step_counter(is_training)
    x = _conv_bn_relu(x, fc_channels, 3, "fc6", is_training)
    endpoints["fc6"] = x = layers.dropout(x, dropout, is_training, step)
    x = _conv_bn_relu(x, fc_channels, 1, "fc7", is_training)
    endpoints["fc7"] = layers.dropout(x, dropout, is_training, step)


def _score(x, num_classes, name):
    # Zero-initialised like FCN: the skip starts as a no-op and the net as uniform probabilities.
    return layers.conv2d(x, num_classes, 1, name, initializer=tf.compat.v1.zeros_initializer())


def _fcn_head(endpoints, num_classes, variant, size, input_scale=1.0):
    """Score layers, learnable 2x upsamplings and skip fusions; returns logits of ``size``.

    The final fixed upsampling (by the head's factor / ``input_scale``)
    produces only the top-left ``size`` = (H, W) of the padded map, i.e. it
    also crops the stride padding away.
    """
    score = _score(endpoints["fc7"], num_classes, "score_fr")
    endpoints["score_fr"] = score
    for pool, upsampling in skips(variant):
        skip = endpoints[f"score_{pool}"] = _score(endpoints[pool], num_classes, f"score_{pool}")
        score = layers.upsample_learnable(score, 2, upsampling) + skip
    upscore = layers.upsample_fixed(score, FINAL_UPSAMPLING[variant] / input_scale, "upscore",
                                    size)
    endpoints["upscore"] = upscore
    return upscore


def weight_decay_loss(scope="fcn"):
    """Sum of ``tf.nn.l2_loss`` over the convolution kernels of the model.

    Only variables named ``weights`` count (convolutions and score layers);
    biases, batch norm parameters and the bilinear upsampling kernels
    (``upscore*`` scopes) are not decayed. Multiply by the decay factor in
    the training loop.

    Args:
        scope: the variable scope the model was built in ('fcn', or e.g.
            'tower/fcn' when built inside an outer scope).

    Returns:
        float32 scalar tensor (0.0 when the scope holds no kernels).
    """
    kernels = [v for v in tf.compat.v1.trainable_variables(scope.rstrip("/") + "/")
               if v.op.name.endswith("/weights") and "/upscore" not in v.op.name]
    if not kernels:
        return tf.constant(0.0, tf.float32)
    return tf.add_n([tf.nn.l2_loss(v) for v in kernels], name="weight_decay_loss")


def count_parameters(scope="fcn"):
    """Number of trainable scalars under ``scope`` in the default graph (int)."""
    variables = tf.compat.v1.trainable_variables(scope.rstrip("/") + "/")
    return int(sum(np.prod(v.shape.as_list()) for v in variables))


def load_vgg16_weights(session, h5_path, scope="fcn"):
    """Loads Keras VGG16 ImageNet weights into a vgg16-backbone graph; see vgg16_weights.py."""
    from fcn_tf1 import vgg16_weights
    return vgg16_weights.load_vgg16_weights(session, h5_path, scope=scope)
