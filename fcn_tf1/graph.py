"""Graph construction from a RunConfig: the design's placeholders -> inference -> loss -> train op.

``build_inference_graph(config)`` is what eval, predict and export rebuild;
``build_training_graph(config)`` adds the loss, weight decay, the learning-rate
schedule, the optimizer and the summaries. Both must be called inside a
``tf.Graph().as_default()`` block; both return plain namedtuples of tensors.
``learning_rate_schedule`` and ``make_optimizer`` are shared with the
multi-tower graph (towers.py).
"""
import collections

import tensorflow as tf

from fcn_tf1 import losses, model
from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1

InferenceGraph = collections.namedtuple(
    "InferenceGraph", ["images", "is_training", "logits", "predictions", "probabilities"])

TrainingGraph = collections.namedtuple(
    "TrainingGraph", InferenceGraph._fields + (
        "labels", "data_loss", "total_loss", "pixel_accuracy", "learning_rate",
        "global_step", "train_op", "summary_op", "time_fraction"))


def build_inference_graph(config, test_scales=None, test_flip=False):
    """Placeholders and the forward pass.

    Args:
      config: the RunConfig.
      test_scales: optional test-time scales, multiples of ``config.input_scale``
        (1 = the scale the run trained at; (1, 1.25) also runs the net at 1.25
        times that). With these or ``test_flip`` the graph is for inference
        only: it runs the net (batch norm in inference mode) on every view,
        each scale and, with ``test_flip``, its left-right mirror, undoes the
        mirroring and averages the views' softmax probabilities; ``logits``
        are then the log of that average (its softmax is the average).
      test_flip: also average over the left-right mirrored images.

    Returns:
      InferenceGraph: ``images`` float32 placeholder [None, None, None, 3] (RGB
      0..255), ``is_training`` bool placeholder (default False: batch norm uses
      its moving averages, no dropout; ignored by a test-time-averaged graph),
      ``logits`` float32 [B, H, W, C] (what the loss takes), ``predictions``
      int64 [B, H, W] (argmax: prediction only, never before the loss),
      ``probabilities`` float32 [B, H, W, C]; with ``config.prior_correction``
      the last two come from the prior-corrected logits (decision_logits).
    """
    # a graph-level seed makes every initializer and dropout mask reproducible
    tf1.set_random_seed(config.seed)
    images = tf1.placeholder(tf.float32, [None, None, None, 3], name="images")
    is_training = tf1.placeholder_with_default(False, [], name="is_training")
    if test_scales is None and not test_flip:
        logits = _inference(images, config, config.input_scale, is_training)
        probabilities = losses.probabilities(logits)
    else:
        probabilities = _view_average(images, config, test_scales or (1.0,), test_flip)
        logits = tf.math.log(probabilities, name="logits")
    decision = decision_logits(logits, config)
    if decision is not logits:
        probabilities = losses.probabilities(decision)
    return InferenceGraph(images=images, is_training=is_training, logits=logits,
                          predictions=losses.predictions(decision), probabilities=probabilities)


def decision_logits(logits, config):
    """The logits the prediction is taken from: ``logits`` themselves, or with
    ``config.prior_correction`` > 0 the prior-corrected logits
    ``logits - prior_correction * log(config.class_priors)`` (losses.prior_offsets).
    The loss always takes the raw logits."""
    if not config.prior_correction:
        return logits
    if config.class_priors is None:
        raise ConfigError("prior_correction needs the run's class_priors (computed from the "
                          "training images when a run starts)")
    offsets = losses.prior_offsets(config.class_priors, config.prior_correction)
    return tf.add(logits, tf.constant(offsets), name="prior_corrected_logits")


def _inference(images, config, input_scale, is_training):
    return model.inference(images, num_classes=config.num_classes, variant=config.variant,
                           backbone=config.backbone, width=config.width, dropout=config.dropout,
                           input_scale=input_scale, is_training=is_training)


def _view_average(images, config, test_scales, test_flip):
    """Mean softmax probabilities [B, H, W, C] over the test-time views (shared variables)."""
    with tf.name_scope("test_time_views"):
        views = []
        for multiple in test_scales:
            for mirrored in ((False, True) if test_flip else (False,)):
                x = tf.reverse(images, axis=[2]) if mirrored else images
                p = losses.probabilities(
                    _inference(x, config, config.input_scale * multiple, is_training=False))
                views.append(tf.reverse(p, axis=[2]) if mirrored else p)
        return tf.add_n(views) / float(len(views))


def time_fraction_input(config):
    """The float32 scalar placeholder ``time_fraction`` for ``lr_schedule='poly_time'``, else None.

    It is the share of the run's time budget used so far (progress.Progress
    seconds / 60 max_minutes), fed with every training step by train.py; a
    runner that does not feed it fails on its first step instead of training
    at a wrong rate.
    """
    if config.lr_schedule != "poly_time":
        return None
    return tf1.placeholder(tf.float32, [], name="time_fraction")


def learning_rate_schedule(config, global_step, time_fraction=None):
    """The learning rate as a tensor of ``global_step`` (poly, step or constant)
    or, for poly_time, of the ``time_fraction`` placeholder (time_fraction_input)."""
    if config.lr_schedule == "poly":
        return tf1.train.polynomial_decay(config.learning_rate, global_step, config.max_steps,
                                          end_learning_rate=0.0, power=config.poly_power)
    if config.lr_schedule == "poly_time":
        if time_fraction is None:
            raise ValueError("lr_schedule 'poly_time' needs the time_fraction input "
                             "(graph.time_fraction_input)")
        left = 1.0 - tf.clip_by_value(time_fraction, 0.0, 1.0)
        return tf.multiply(config.learning_rate, left ** config.poly_power, name="learning_rate")
    if config.lr_schedule == "step":
        return tf1.train.exponential_decay(config.learning_rate, global_step, config.step_size,
                                           config.step_gamma, staircase=True)
    return tf.constant(config.learning_rate, tf.float32)


def make_optimizer(config, learning_rate):
    """The ``tf.compat.v1.train`` optimizer of ``config`` (momentum or Adam)."""
    if config.optimizer == "momentum":
        return tf1.train.MomentumOptimizer(learning_rate, config.momentum)
    return tf1.train.AdamOptimizer(learning_rate)


def build_training_graph(config, wrap_optimizer=None):
    """The whole training graph of the design.

    Labels come from an int64 placeholder [None, None, None] (0..C-1, void =
    ``config.void_label``); ``loss()`` reshapes logits to [-1, C] and labels to
    [-1] (or not, for ``loss_variant='reshape_free'``) and masks void pixels
    before the softmax cross-entropy op. Weight decay is added explicitly;
    batch-norm updates run with the train op.

    Args:
      config: the RunConfig.
      wrap_optimizer: optional callable(optimizer) -> optimizer, e.g. one that
        returns a ``tf.compat.v1.train.SyncReplicasOptimizer`` around it
        (distributed.py). The ``UPDATE_OPS`` (batch norm, dropout counter) are
        then grouped with its train op instead of being control dependencies
        of it: a wrapper may apply the update elsewhere (SyncReplicasOptimizer
        applies it in the chief's queue runner, which feeds no batch).
    """
    net = build_inference_graph(config)
    labels = tf1.placeholder(tf.int64, [None, None, None], name="labels")
    global_step = tf1.train.get_or_create_global_step()

    class_weights = None if config.class_weights is None else list(config.class_weights)
    data_loss = losses.loss(net.logits, labels, num_classes=config.num_classes,
                            void_label=config.void_label, class_weights=class_weights,
                            variant=config.loss_variant)
    total_loss = data_loss
    if config.weight_decay > 0:
        total_loss = data_loss + config.weight_decay * model.weight_decay_loss()

    valid = tf.not_equal(labels, config.void_label)
    correct = tf.logical_and(valid, tf.equal(net.predictions, labels))
    pixel_accuracy = tf.math.divide_no_nan(tf.reduce_sum(tf.cast(correct, tf.float32)),
                                           tf.reduce_sum(tf.cast(valid, tf.float32)))

    time_fraction = time_fraction_input(config)
    learning_rate = learning_rate_schedule(config, global_step, time_fraction)
    optimizer = make_optimizer(config, learning_rate)
    update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    if wrap_optimizer is None:
        with tf.control_dependencies(update_ops):
            train_op = optimizer.minimize(total_loss, global_step=global_step)
    else:
        train_op = tf.group(wrap_optimizer(optimizer).minimize(total_loss, global_step=global_step),
                            *update_ops, name="train_op")

    summary_op = tf1.summary.merge([
        tf1.summary.scalar("loss/data", data_loss),
        tf1.summary.scalar("loss/total", total_loss),
        tf1.summary.scalar("learning_rate", learning_rate),
        tf1.summary.scalar("train/pixel_accuracy", pixel_accuracy),
    ])
    return TrainingGraph(*net, labels=labels, data_loss=data_loss, total_loss=total_loss,
                         pixel_accuracy=pixel_accuracy, learning_rate=learning_rate,
                         global_step=global_step, train_op=train_op, summary_op=summary_op,
                         time_fraction=time_fraction)
