"""The Keras 3 peer: our FCN layer for layer as a functional keras.Model, trained by train_on_batch.

    build_model(plan, image_size, ...)     -> keras.Model, logits [B, H, W, C] (channels last)
    masked_loss(void_label)                -> the loss function (y_true, y_pred) -> scalar
    KerasTrainer(spec, xla, precision)     .step(images, labels) -> loss; one train_on_batch
    parameter_groups(model)                {layer: trainable scalars} (name_bn merged into name)
    load_weights(model, weights)           weights {layer: {var: array}} in our variable names

Every layer follows fcn_spec.layer_plan: Conv2D (SAME, He init, L2 on the kernel
of ``weight_decay / 2 * sum(w**2)``, i.e. ``weight_decay * tf.nn.l2_loss``),
BatchNormalization (our epsilon and decay), ReLU, MaxPooling2D, Dropout, Add.
The learnable bilinear transposed convolutions are a small custom layer calling
``tf.nn.conv2d_transpose`` with our explicit cropping: ``keras.ops.conv_transpose``
only offers 'valid' / 'same', and 'valid' plus Cropping2D would compute more
FLOPs than our graph. The fixed final upsampling is Keras' bilinear
UpSampling2D (the standard Keras way; the same map as ours, see build_model).
The optimizer is keras.optimizers.SGD with momentum and keras' PolynomialDecay
(the same schedule as tf.compat.v1.train.polynomial_decay).

Precision ``bf16`` is Keras' own mixed precision: the ``mixed_bfloat16`` dtype
policy (float32 variables, bfloat16 computation) given to every layer of this
model, never set globally, so float32 models in the same process stay float32.
The final upsampling layer computes in float32, as Keras' mixed-precision guide
advises for a model's last layer: the logits, and so the loss, are float32.
Requires the TensorFlow backend (KERAS_BACKEND=tensorflow, the default).
"""
import numpy as np

from . import fcn_spec

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}  # precision -> Keras dtype policy


def _keras():
    import keras
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"the Keras peer needs the TensorFlow backend, not "
                           f"{keras.backend.backend()!r}")
    return keras


def _layers():
    """The custom layer classes, defined on first use (importing keras is slow)."""
    keras = _keras()
    import tensorflow as tf
    from fcn_tf1 import layers as our_layers

    class Preprocess(keras.layers.Layer):
        """RGB 0..255 -> permuted channels, minus the mean, over the std (as our graph)."""

        def __init__(self, perm, mean, std, **kwargs):
            super().__init__(**kwargs)
            self.perm, self.mean, self.std = tuple(perm), tuple(mean), tuple(std)

        def call(self, x):
            if self.perm != (0, 1, 2):
                x = keras.ops.take(x, list(self.perm), axis=-1)
            x = x - keras.ops.convert_to_tensor(self.mean, x.dtype)
            if self.std != (1.0, 1.0, 1.0):
                x = x / keras.ops.convert_to_tensor(self.std, x.dtype)
            return x

    class BilinearUpsample(keras.layers.Layer):
        """The learnable x ``factor`` bilinear transposed convolution, exactly fcn_tf1.layers'.

        (See the module doc; the fixed final upsampling is a resize, not this layer.)
        """

        def __init__(self, factor, **kwargs):
            super().__init__(**kwargs)
            self.factor = int(factor)

        def build(self, input_shape):
            channels = int(input_shape[-1])
            kernel = our_layers.bilinear_kernel(self.factor, channels)
            self.kernel = self.add_weight(
                name="kernel", shape=kernel.shape, trainable=True,
                initializer=keras.initializers.Constant(kernel))

        def call(self, x):
            f = self.factor
            padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
            shape = tf.shape(x)
            out_shape = tf.stack([shape[0], shape[1] * f, shape[2] * f, shape[3]])
            crop = 3 * f // 2
            return tf.nn.conv2d_transpose(padded, self.kernel, out_shape, strides=f,
                                          padding=[[0, 0], [crop, crop], [crop, crop], [0, 0]])

        def compute_output_shape(self, input_shape):
            b, h, w, c = input_shape
            return (b, None if h is None else h * self.factor,
                    None if w is None else w * self.factor, c)

    return Preprocess, BilinearUpsample


def _conv(keras, conv, weight_decay, dtype):
    init = "zeros" if conv.zero_init else keras.initializers.VarianceScaling(
        2.0, "fan_in", "truncated_normal")
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay > 0 else None
    return keras.layers.Conv2D(conv.out_channels, conv.kernel, padding="same",
                               use_bias=conv.bias, kernel_initializer=init,
                               kernel_regularizer=regularizer, name=conv.name, dtype=dtype)


def _block(keras, x, conv, plan, weight_decay, dtype):
    x = _conv(keras, conv, weight_decay, dtype)(x)
    if conv.batch_norm:
        x = keras.layers.BatchNormalization(momentum=plan.bn_decay, epsilon=plan.bn_epsilon,
                                            name=conv.name + "_bn", dtype=dtype)(x)
    return keras.layers.ReLU(name=conv.name + "_relu", dtype=dtype)(x) if conv.relu else x


def build_model(plan, image_size, weight_decay=0.0, precision="fp32"):
    """The FCN of ``plan`` as a keras.Model on [B, image_size, image_size, 3] float32 RGB;
    its layers in the dtype policy of ``precision`` (see the module docstring)."""
    keras = _keras()
    Preprocess, BilinearUpsample = _layers()
    dtype = keras.DTypePolicy(POLICIES[precision])
    images = keras.Input((image_size, image_size, 3), name="images")
    x = Preprocess(plan.input_perm, plan.input_mean, plan.input_std, name="preprocess",
                   dtype=dtype)(images)
    endpoints = {}
    for s, stage in enumerate(plan.stages, 1):
        for conv in stage:
            x = _block(keras, x, conv, plan, weight_decay, dtype)
        x = endpoints[f"pool{s}"] = keras.layers.MaxPooling2D(2, 2, padding="same",
                                                              name=f"pool{s}", dtype=dtype)(x)
    for conv in plan.fc:
        x = _block(keras, x, conv, plan, weight_decay, dtype)
        x = keras.layers.Dropout(plan.dropout_rate, name=conv.name + "_dropout", dtype=dtype)(x)
    score = _block(keras, x, plan.score_fr, plan, weight_decay, dtype)
    for fusion in plan.fusions:
        up = BilinearUpsample(fusion.upsample.factor, name=fusion.upsample.name, dtype=dtype)(score)
        skip = _block(keras, endpoints[fusion.source], fusion.score, plan, weight_decay, dtype)
        score = keras.layers.Add(name=f"fuse_{fusion.source}", dtype=dtype)([up, skip])
    # The fixed final upsampling: Keras' own bilinear UpSampling2D (tf.image.resize,
    # half-pixel centres) is the same linear map as FCN's frozen bilinear deconvolution.
    # In float32 under every policy: it casts its input, so the logits are float32.
    logits = keras.layers.UpSampling2D(plan.final.factor, interpolation="bilinear",
                                       name=plan.final.name, dtype="float32")(score)
    return keras.Model(images, logits, name="fcn")


def masked_loss(void_label):
    """Mean sparse softmax cross entropy over non-void pixels (void -> class 0, weight 0)."""
    keras = _keras()
    ops = keras.ops

    def loss(y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        valid = ops.not_equal(labels, void_label)
        safe = ops.where(valid, labels, ops.zeros_like(labels))
        per_pixel = ops.sparse_categorical_crossentropy(safe, y_pred, from_logits=True)
        weights = ops.cast(valid, "float32")
        return ops.divide_no_nan(ops.sum(weights * per_pixel), ops.sum(weights))

    return loss


def make_optimizer(spec):
    """keras SGD with momentum and the poly (or constant) learning rate of ``spec``."""
    keras = _keras()
    rate = spec.learning_rate
    if spec.lr_schedule == "poly":
        rate = keras.optimizers.schedules.PolynomialDecay(
            spec.learning_rate, spec.decay_steps, end_learning_rate=0.0, power=spec.poly_power)
    return keras.optimizers.SGD(learning_rate=rate, momentum=spec.momentum)


class KerasTrainer:
    """The compiled peer of one BenchSpec; ``xla`` is compile(jit_compile=...), ``precision``
    'fp32' or 'bf16' (the mixed_bfloat16 policy)."""

    def __init__(self, spec, xla, precision="fp32"):
        keras = _keras()
        keras.utils.set_random_seed(spec.seed)
        self.model = build_model(fcn_spec.layer_plan(spec), spec.image_size, spec.weight_decay,
                                 precision)
        self.model.compile(optimizer=make_optimizer(spec), loss=masked_loss(spec.void_label),
                           jit_compile=bool(xla))

    def step(self, images, labels):
        """One training step on numpy float32 [B, H, W, 3] and int64 [B, H, W]; returns the loss."""
        return float(self.model.train_on_batch(images, labels))


def parameter_groups(model):
    """{layer name: trainable scalars}, a conv's ``NAME_bn`` batch norm counted under NAME."""
    groups = {}
    for layer in model.layers:
        count = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
        if count:
            name = layer.name[:-3] if layer.name.endswith("_bn") else layer.name
            groups[name] = groups.get(name, 0) + count
    return groups


def decayed_parameters(model):
    """Scalars under L2 weight decay (kernels of layers with a regularizer)."""
    return sum(int(np.prod(layer.kernel.shape)) for layer in model.layers
               if getattr(layer, "kernel_regularizer", None) is not None)


def load_weights(model, weights):
    """Sets the model's weights from ``{layer: {weights|biases|gamma|beta|moving_*: array}}``."""
    for layer in model.layers:
        if layer.name in weights and hasattr(layer, "kernel"):
            ours = weights[layer.name]
            values = [ours["weights"]] + ([ours["biases"]] if "biases" in ours else [])
            layer.set_weights(values)
        elif layer.name.endswith("_bn") and layer.name[:-3] in weights:
            ours = weights[layer.name[:-3]]
            layer.set_weights([ours[k] for k in ("gamma", "beta", "moving_mean",
                                                  "moving_variance")])
