"""The trained FCN's forward pass in plain TensorFlow 2 (eager or tf.function), no compat.v1.

    load_weights(checkpoint, averaged=False)     -> {checkpoint name: tf.Variable}
    forward(weights, images, variant='fcn8s', input_scale=1.0)
                                                 -> logits float32 [B, H, W, C]
    EagerFCN(checkpoint, variant='fcn8s', input_scale=1.0, averaged=False)
                                                 a tf.Module; model(images) runs a tf.function
    EagerFCN.from_run(train_dir, checkpoint=None)   the architecture read from config.json

The way off ``tf.compat.v1`` for a model trained by this package. A TF1 Saver
checkpoint is name-based: ``tf.train.load_checkpoint`` reads it without any
graph, by the variable names model.py creates (``fcn/conv1_1/weights``,
``fcn/conv1_1/gamma`` .. ``moving_variance``, ``fcn/score_fr/biases``,
``fcn/upscore2/weights``, ...; optimizer slots and ``fcn/dropout_counter`` are
left out). The computation is ``model.inference(..., is_training=False)``'s:
the same preprocessing, input rescaling and padding to a multiple of 32 (model.py), pooling and
bilinear transposed-convolution upsampling (layers.py), batch norm with its
moving averages, no dropout. Every backbone and every variant; the
backbone and the number of classes follow from the weights themselves.
tests/test_tf2_native.py shows the logits equal the graph model's.
"""
import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import averaging, checkpoints, layers, model

SCOPE = "fcn/"
# the last part of every variable name inference() reads at inference time
MODEL_VARIABLES = ("weights", "biases", "gamma", "beta", "moving_mean", "moving_variance")


def load_weights(checkpoint, averaged=False):
    """The model's variables from a name-based (tf.compat.v1.train.Saver) checkpoint.

    Args:
        checkpoint: checkpoint prefix, e.g. ``runs/default/model.ckpt-500``.
        averaged: read each variable's moving average where the checkpoint holds
            one (a run with ``ema_decay``; averaging.py).

    Returns:
        dict {name: tf.Variable}, names as in the checkpoint (``fcn/conv1_1/weights``).
    """
    reader = tf.train.load_checkpoint(str(checkpoint))
    names = sorted(name for name in reader.get_variable_to_shape_map()
                   if name.startswith(SCOPE) and name.rsplit("/", 1)[-1] in MODEL_VARIABLES)
    if not names:
        raise ValueError(f"{checkpoint}: no fcn/ model variables in this checkpoint")
    def value(name):
        average = averaging.average_name(name)
        return reader.get_tensor(average if averaged and reader.has_tensor(average) else name)

    return {name: tf.Variable(value(name), name=name.replace("/", ".")) for name in names}


def _layer(weights, x, name):
    """Convolution ``name`` with its bias, or with batch norm when it has one (compact)."""
    y = tf.nn.conv2d(x, weights[f"{SCOPE}{name}/weights"], strides=1, padding="SAME")
    if f"{SCOPE}{name}/biases" in weights:
        y = tf.nn.bias_add(y, weights[f"{SCOPE}{name}/biases"])
    if f"{SCOPE}{name}/gamma" in weights:
        y = tf.nn.batch_normalization(
            y, weights[f"{SCOPE}{name}/moving_mean"], weights[f"{SCOPE}{name}/moving_variance"],
            offset=weights[f"{SCOPE}{name}/beta"], scale=weights[f"{SCOPE}{name}/gamma"],
            variance_epsilon=layers.BN_EPSILON)
    return y


def _upsample_2x(weights, x, name):
    """The learned 2x upsampling ``name`` (model.SKIP_UPSAMPLINGS)."""
    return layers.upsample_with_kernel(x, weights[f"{SCOPE}{name}/weights"], 2, x.shape[-1])


def forward(weights, images, variant="fcn8s", input_scale=1.0):
    """Unscaled logits of the FCN whose variables are ``weights``; runs eagerly or traced.

    Args:
        weights: dict from :func:`load_weights`.
        images: [B, H, W, 3] raw RGB 0..255 (any real dtype; any H, W).
        variant: 'fcn32s', 'fcn16s', 'fcn8s' or 'fcn4s', as the run was trained.
        input_scale: the run's input_scale (config.json; not in the checkpoint).

    Returns:
        float32 [B, H, W, num_classes], equal to ``model.inference(..., is_training=False)``.
    """
    if variant not in model.VARIANTS:
        raise ValueError(f"variant must be one of {model.VARIANTS}, got {variant!r}")
    backbone = "compact" if f"{SCOPE}conv1_1/gamma" in weights else "vgg16"  # same input for vgg_bn
    # the checkpoint's own layers: conv{s}_1, conv{s}_2, ... as far as they exist
    convs_per_stage = [sum(1 for name in weights if name.startswith(f"{SCOPE}conv{stage}_")
                           and name.endswith("/weights")) for stage in range(1, 6)]
    x, height, width = model.network_input(tf.cast(images, tf.float32), backbone, input_scale)
    pools = {}
    for stage, convs in enumerate(convs_per_stage, start=1):
        for index in range(1, convs + 1):
            x = tf.nn.relu(_layer(weights, x, f"conv{stage}_{index}"))
        x = pools[f"pool{stage}"] = layers.max_pool(x, f"pool{stage}")
    x = tf.nn.relu(_layer(weights, x, "fc6"))  # dropout: identity at inference
    x = tf.nn.relu(_layer(weights, x, "fc7"))
    score = _layer(weights, x, "score_fr")
    for pool, upsampling in model.skips(variant):
        score = _upsample_2x(weights, score, upsampling) + _layer(weights, pools[pool],
                                                                  f"score_{pool}")
    return layers.upsample_fixed(score, model.FINAL_UPSAMPLING[variant] / input_scale, "upscore",
                                 (height, width))


class EagerFCN(tf.Module):
    """A trained run as a TF2 module: ``EagerFCN(...)(images)`` -> logits (a tf.function).

    Args:
        checkpoint: checkpoint prefix of a run trained by this package.
        variant: the run's FCN variant (config.VARIANTS).
        input_scale: the run's input_scale.
        averaged: the weights' moving averages (a run with ``ema_decay``).
    """

    def __init__(self, checkpoint, variant="fcn8s", input_scale=1.0, averaged=False):
        super().__init__(name="eager_fcn")
        self.variant = variant
        self.input_scale = float(input_scale)
        self.weights = load_weights(checkpoint, averaged)
        self.num_classes = int(self.weights[f"{SCOPE}score_fr/weights"].shape[-1])

    @classmethod
    def from_run(cls, train_dir, checkpoint=None):
        """The run in ``train_dir`` (its config.json, its latest or the given checkpoint)."""
        config = config_lib.load(train_dir)
        return cls(checkpoints.find(train_dir, checkpoint), variant=config.variant,
                   input_scale=config.input_scale, averaged=config.ema_decay > 0)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        """float32 [B, H, W, 3] RGB 0..255 -> float32 logits [B, H, W, num_classes].

        The raw logits: a run with a ``prior_correction`` predicts
        argmax(logits + losses.prior_offsets(config.class_priors, tau)).
        """
        return forward(self.weights, images, self.variant, self.input_scale)
