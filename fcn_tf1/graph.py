"""Graph construction from a RunConfig: placeholders -> inference -> loss -> train op.

API (call inside a ``tf.Graph().as_default()`` block; namedtuples of tensors)::

    inference(images, config, input_scale=None, is_training=False)  model.inference from a config
    build_inference_graph(config, test_scales=None, test_flip=False)  -> InferenceGraph
    build_training_graph(config, devices=None, variables_device="/cpu:0",
                         wrap_optimizer=None)                         -> TrainingGraph
    decision_logits(logits, config)        the logits predictions are taken from
    prior_offsets_feed(session, config)    feeds them the offsets of config.prior_correction

``build_inference_graph`` is what eval, predict and export rebuild;
``build_training_graph`` adds the loss, weight decay, the learning-rate
schedule, the optimizer and the summaries, on one tower (the default) or
replicated over ``devices`` (in-graph replication, one tower per device).
"""
import collections

import tensorflow as tf

from fcn_tf1 import averaging, losses, model
from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1

InferenceGraph = collections.namedtuple(
    "InferenceGraph", ["images", "is_training", "logits", "predictions", "probabilities"])

TrainingGraph = collections.namedtuple(
    "TrainingGraph", InferenceGraph._fields + (
        "labels", "data_loss", "total_loss", "pixel_accuracy", "learning_rate",
        "global_step", "train_op", "summary_op", "time_fraction", "grads_and_vars", "devices",
        "averager"))
VARIABLE_OPS = ("VarHandleOp", "VariableV2", "Variable")
PRIOR_OFFSETS = "prior_offsets"  # the name of decision_logits' offsets input


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
        logits = inference(images, config, is_training=is_training)
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
    The loss always takes the raw logits. The offsets are a placeholder with
    that default (``prior_offsets``), also built for a run that chooses its
    correction at its end (``chooses_prior_correction``): prior_offsets_feed."""
    if not config.prior_correction and not config.chooses_prior_correction:
        return logits
    if config.class_priors is None:
        raise ConfigError("prior_correction needs the run's class_priors (computed from the "
                          "training images when a run starts)")
    offsets = losses.prior_offsets(config.class_priors, config.prior_correction)
    offsets = tf1.placeholder_with_default(tf.constant(offsets, tf.float32), [len(offsets)],
                                           name=PRIOR_OFFSETS)
    return tf.add(logits, offsets, name="prior_corrected_logits")


def prior_offsets_feed(session, config):
    """{the graph's prior offsets: those of ``config.prior_correction``}, or {} without them."""
    try:
        offsets = session.graph.get_tensor_by_name(PRIOR_OFFSETS + ":0")
    except KeyError:
        return {}
    return {offsets: losses.prior_offsets(config.class_priors, config.prior_correction)}


def inference(images, config, input_scale=None, is_training=False):
    """``model.inference`` with the architecture of ``config``: unscaled logits [B, H, W, C].

    ``input_scale`` defaults to the run's own; ``is_training``: a bool or bool tensor.
    """
    return model.inference(images, num_classes=config.num_classes, variant=config.variant,
                           backbone=config.backbone, width=config.width, dropout=config.dropout,
                           input_scale=config.input_scale if input_scale is None else input_scale,
                           is_training=is_training)


def _view_average(images, config, test_scales, test_flip):
    """Mean softmax probabilities [B, H, W, C] over the test-time views (shared variables)."""
    with tf.name_scope("test_time_views"):
        views = []
        for multiple in test_scales:
            for mirrored in ((False, True) if test_flip else (False,)):
                x = tf.reverse(images, axis=[2]) if mirrored else images
                p = losses.probabilities(
                    inference(x, config, config.input_scale * multiple, is_training=False))
                views.append(tf.reverse(p, axis=[2]) if mirrored else p)
        return tf.add_n(views) / float(len(views))


def time_fraction_input(config):
    """The float32 scalar placeholder ``time_fraction`` for ``lr_schedule='poly_time'``, else None.

    It is the share of the run's time budget used so far (RunClock seconds / 60
    max_minutes), fed with every step; a runner that does not feed it fails on
    its first step instead of training at a wrong rate.
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
            raise ValueError("lr_schedule 'poly_time' needs graph.time_fraction_input")
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


def build_training_graph(config, devices=None, variables_device="/cpu:0", wrap_optimizer=None):
    """The whole training graph, on one tower or replicated over ``devices``.

    Labels come from an int64 placeholder [None, None, None] (0..C-1, void =
    ``config.void_label``); ``loss()`` reshapes logits to [-1, C] and labels to
    [-1] (or not, for ``loss_variant='reshape_free'``) and masks void pixels
    before the softmax cross-entropy op. Weight decay is added explicitly, once;
    batch-norm updates run with the train op.

    Towers (``devices`` given; the CIFAR-10 multi-GPU pattern): the batch is
    split along its first axis as evenly as possible, tower ``i`` runs
    inference() and loss() on its part on ``devices[i]``, the variables live
    once on ``variables_device`` and are shared (inference() opens its variable
    scope with AUTO_REUSE, so the variable names, and the checkpoints, are
    those of one tower). Tower ``i``'s data loss is ``S_i / W_i`` (weighted sum
    of pixel losses over weighted valid pixels), so its gradient is weighted by
    ``W_i / sum(W)``: the result is the gradient of the loss of the whole batch
    however the void pixels fall between the towers. Each tower's batch norm
    normalises with its own part's statistics; the moving averages follow
    tower 0; the dropout counter advances once per step, after every tower
    has read it, so a run stays reproducible.

    Args:
      config: the RunConfig.
      devices: None for one tower placed by TensorFlow (the ordinary case), or
        one device string per tower, e.g. ['/gpu:0', '/gpu:1']
        (parallel.devices.tower_devices).
      variables_device: where the shared variables live when ``devices`` is given.
      wrap_optimizer: optional callable(optimizer) -> optimizer, e.g. one that
        returns a ``tf.compat.v1.train.SyncReplicasOptimizer`` around it
        (parallel/distributed.py); one tower only. The ``UPDATE_OPS`` (batch
        norm, dropout counter) are then grouped with its train op instead of
        being control dependencies of it: a wrapper may apply the update
        elsewhere (SyncReplicasOptimizer applies it in the chief's queue
        runner, which feeds no batch).

    Returns:
      TrainingGraph: the InferenceGraph fields for the whole batch plus
      ``labels``, the losses, ``pixel_accuracy`` (of the predictions, on valid
      pixels), ``learning_rate``, ``global_step``, ``train_op``, ``summary_op``,
      ``time_fraction`` (poly_time's input, else None), ``grads_and_vars``
      (with towers: the combined gradient before it is applied; else None),
      ``devices`` and ``averager`` (with ``config.ema_decay``: the
      averaging.Averager whose updates the train op runs; else None).
    """
    if devices is not None:
        check_towers(config, len(devices))
        if wrap_optimizer is not None:
            raise ConfigError("towers and a wrapped (distributed) optimizer do not combine: "
                              "one tower per cluster task")
        return _build_towers(config, list(devices), variables_device)
    # One tower: the op order up to inference() is build_inference_graph's, so the
    # initial weights (op seeds follow the graph seed and the op count) match it.
    net = build_inference_graph(config)
    labels = tf1.placeholder(tf.int64, [None, None, None], name="labels")
    global_step = tf1.train.get_or_create_global_step()
    data_loss = _data_loss(net.logits, labels, config)
    total_loss = data_loss
    if config.weight_decay > 0:
        total_loss = data_loss + config.weight_decay * model.weight_decay_loss()
    pixel_accuracy = _pixel_accuracy(net.predictions, labels, config.void_label)
    time_fraction = time_fraction_input(config)
    learning_rate = learning_rate_schedule(config, global_step, time_fraction)
    optimizer = make_optimizer(config, learning_rate)
    update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    if wrap_optimizer is None:
        with tf.control_dependencies(update_ops):
            train_op = optimizer.minimize(total_loss, global_step=global_step)
    elif config.ema_decay:
        raise ConfigError("--ema-decay does not combine with distributed training: the "
                          "averages would be updated by the chief alone")
    else:
        train_op = tf.group(wrap_optimizer(optimizer).minimize(total_loss, global_step=global_step),
                            *update_ops, name="train_op")
    averager = _averager(config, global_step)
    return TrainingGraph(*net, labels=labels, data_loss=data_loss, total_loss=total_loss,
                         pixel_accuracy=pixel_accuracy, learning_rate=learning_rate,
                         global_step=global_step,
                         train_op=averager.after(train_op) if averager else train_op,
                         summary_op=_summaries(data_loss, total_loss, learning_rate,
                                               pixel_accuracy),
                         time_fraction=time_fraction, grads_and_vars=None, devices=None,
                         averager=averager)


def _averager(config, global_step):
    """The weight averages of ``config.ema_decay`` (averaging.Averager), or None."""
    return averaging.Averager(config.ema_decay, global_step) if config.ema_decay else None


def check_towers(config, num_towers):
    """Raises ConfigError unless ``config``'s batch can be split over ``num_towers`` towers."""
    if config.lovasz_weight:
        raise ConfigError("--lovasz-weight does not combine with --towers: the Lovasz term is "
                          "the IU of the whole batch, a tower sees only its part")
    if num_towers > config.batch_size:
        raise ConfigError(f"--towers {num_towers}: needs a batch size of at least "
                          f"{num_towers}, the run has {config.batch_size}")


def _data_loss(logits, labels, config):
    class_weights = None if config.class_weights is None else list(config.class_weights)
    data_loss = losses.loss(logits, labels, num_classes=config.num_classes,
                            void_label=config.void_label, class_weights=class_weights,
                            variant=config.loss_variant)
    if not config.lovasz_weight:
        return data_loss
    return data_loss + config.lovasz_weight * losses.lovasz_softmax(
        logits, labels, config.num_classes, config.void_label)


def _pixel_accuracy(predictions, labels, void_label):
    valid = tf.not_equal(labels, void_label)
    correct = tf.logical_and(valid, tf.equal(predictions, labels))
    return tf.math.divide_no_nan(tf.reduce_sum(tf.cast(correct, tf.float32)),
                                 tf.reduce_sum(tf.cast(valid, tf.float32)))


def _summaries(data_loss, total_loss, learning_rate, pixel_accuracy):
    return tf1.summary.merge([
        tf1.summary.scalar("loss/data", data_loss),
        tf1.summary.scalar("loss/total", total_loss),
        tf1.summary.scalar("learning_rate", learning_rate),
        # the tag validation writes too (summaries.py): the two curves overlay
        tf1.summary.scalar("metrics/pixel_accuracy", pixel_accuracy),
    ])


def _placement(tower_device, variables_device):
    """Variables on ``variables_device``, every other op on the tower's device."""
    def place(op):
        return variables_device if op.type in VARIABLE_OPS else tower_device
    return place


def _pixel_weight_sum(labels, config):
    """``W``: the sum of the pixel weights losses.loss() divides by (class-weighted valid pixels)."""
    valid = tf.not_equal(labels, config.void_label)
    weights = tf.cast(valid, tf.float32)
    if config.class_weights is not None:
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        weights *= tf.gather(tf.constant(config.class_weights, tf.float32), safe)
    return tf.reduce_sum(weights)


def _split(tensor, num_towers):
    """``tensor`` split along axis 0 as evenly as possible (a part may be empty)."""
    batch = tf.shape(tensor)[0]
    sizes = batch // num_towers + tf.cast(tf.range(num_towers) < batch % num_towers, tf.int32)
    return tf.split(tensor, sizes, num=num_towers)


def _build_towers(config, devices, variables_device):
    num_towers = len(devices)
    tf1.set_random_seed(config.seed)
    with tf.device(variables_device):
        images = tf1.placeholder(tf.float32, [None, None, None, 3], name="images")
        labels = tf1.placeholder(tf.int64, [None, None, None], name="labels")
        is_training = tf1.placeholder_with_default(False, [], name="is_training")
        global_step = tf1.train.get_or_create_global_step()
        time_fraction = time_fraction_input(config)
        learning_rate = learning_rate_schedule(config, global_step, time_fraction)
        optimizer = make_optimizer(config, learning_rate)
        image_parts, label_parts = _split(images, num_towers), _split(labels, num_towers)

    tower_logits, tower_losses, tower_weights, tower_grads = [], [], [], []
    for i, device in enumerate(devices):
        with tf1.device(_placement(device, variables_device)), tf.name_scope(f"tower_{i}"):
            updates_before = len(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS))
            logits = inference(image_parts[i], config, is_training=is_training)
            data_loss = _data_loss(logits, label_parts[i], config)
            tower_weights.append(_pixel_weight_sum(label_parts[i], config))
            tower_grads.append(optimizer.compute_gradients(data_loss))
            if i == 0:
                first_tower_updates = tf1.get_collection(
                    tf1.GraphKeys.UPDATE_OPS)[updates_before:]
        tower_logits.append(logits)
        tower_losses.append(data_loss)

    with tf.device(variables_device):
        weights = tf.stack(tower_weights)
        shares = tf.math.divide_no_nan(weights, tf.reduce_sum(weights))
        # no valid pixel anywhere: every data loss is 0; equal shares keep the sum defined
        shares = tf.where(tf.reduce_sum(weights) > 0, shares,
                          tf.fill([num_towers], 1.0 / num_towers))
        data_loss = tf.add_n([shares[i] * tower_losses[i] for i in range(num_towers)],
                             name="data_loss")
        grads_and_vars = []
        for per_var in zip(*tower_grads):
            var = per_var[0][1]
            grads = [shares[i] * g for i, (g, _) in enumerate(per_var) if g is not None]
            grads_and_vars.append((tf.add_n(grads) if grads else None, var))
        total_loss = data_loss
        if config.weight_decay > 0:
            decay = config.weight_decay * model.weight_decay_loss()
            total_loss = data_loss + decay
            decay_grads = tf.gradients(decay, [v for _, v in grads_and_vars])
            grads_and_vars = [(g if d is None else d if g is None else g + d, v)
                              for (g, v), d in zip(grads_and_vars, decay_grads)]
        update_ops = _first_tower_updates(first_tower_updates, is_training,
                                          tower_losses + [g for g, _ in grads_and_vars
                                                          if g is not None])
        with tf.control_dependencies(update_ops):
            train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
        averager = _averager(config, global_step)
        if averager:
            train_op = averager.after(train_op)

    with tf.device(devices[0]):
        logits = tf.concat(tower_logits, axis=0, name="logits")
        decision = decision_logits(logits, config)
        predictions = losses.predictions(decision)
        pixel_accuracy = _pixel_accuracy(predictions, labels, config.void_label)
    return TrainingGraph(images=images, is_training=is_training, logits=logits,
                         predictions=predictions, probabilities=losses.probabilities(decision),
                         labels=labels, data_loss=data_loss, total_loss=total_loss,
                         pixel_accuracy=pixel_accuracy, learning_rate=learning_rate,
                         global_step=global_step, train_op=train_op,
                         summary_op=_summaries(data_loss, total_loss, learning_rate,
                                               pixel_accuracy),
                         time_fraction=time_fraction, grads_and_vars=grads_and_vars,
                         devices=devices, averager=averager)


def _first_tower_updates(updates, is_training, after):
    """Tower 0's batch-norm updates, and one dropout-counter step that waits for every tower.

    Tower 0's own counter update only waits for tower 0's read of the
    counter; another tower could then read the advanced value.
    """
    counters = [v for v in tf1.global_variables() if v.op.name.endswith("dropout_counter")]
    handles = {v.handle.name for v in counters}
    kept = [u for u in updates if u.op.inputs[0].name not in handles]
    with tf.control_dependencies(after):
        kept += [tf1.assign_add(v, tf.cast(is_training, tf.int64)) for v in counters]
    return kept
