"""In-graph replication on one machine: one tower per device, averaged gradients, one update.

API::

    tower_devices(num_towers)                       -> (devices, session ConfigProto)
    build_multi_tower_training_graph(config, devices, variables_device='/cpu:0') -> TowerGraph
    train_with_towers(requested, train_dir, num_towers, explicit=(), log=print)

The CIFAR-10 multi-GPU pattern: the batch fed to ``images``/``labels`` is
split along its first axis, tower ``i`` runs inference() and loss() on its
part on ``devices[i]`` (GPUs, or virtual CPU devices from
``ConfigProto(device_count={'CPU': n})`` for tests), the variables live once
on ``variables_device`` and are shared (inference() opens its variable scope
with AUTO_REUSE, so towers 1.. reuse tower 0's variables; their names are
exactly those of the single-tower graph and checkpoints are interchangeable),
and one ``apply_gradients`` applies the combined gradient.

Combination: tower ``i``'s data loss is ``S_i / W_i`` (weighted sum of pixel
losses over weighted valid pixels, losses.py), so its gradient is weighted by
``W_i / sum(W)``: the result is the gradient of the loss of the whole batch
however the void pixels fall between the towers (a plain average would
over-weight a tower with few valid pixels). Weight decay is added once.

Batch norm: each tower normalises with the statistics of its own part of the
batch (as CIFAR-10's towers did), so in training mode the gradients are those
of ``n`` smaller batches, not of one big batch; the moving averages are
updated from tower 0's statistics only (its update ops run with the train op;
the other towers' are left out). The dropout counter is advanced once per
step, after every tower has read it, so every tower sees the same step's
value and a run stays reproducible.
"""
import collections

import tensorflow as tf

from fcn_tf1 import graph, losses, model, train
from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1
VARIABLE_OPS = ("VarHandleOp", "VariableV2", "Variable")

TowerGraph = collections.namedtuple(
    "TowerGraph", graph.TrainingGraph._fields + ("grads_and_vars", "devices"))


def tower_devices(num_towers):
    """One device per tower: GPUs when there are enough, else virtual CPU devices.

    Returns:
      (list of device strings, tf.compat.v1.ConfigProto for the Session).
    """
    if num_towers < 1:
        raise ConfigError(f"--towers {num_towers}: must be >= 1")
    if len(tf.config.list_physical_devices("GPU")) >= num_towers:
        return ([f"/gpu:{i}" for i in range(num_towers)],
                tf1.ConfigProto(allow_soft_placement=True))
    # Virtual CPU devices share the same cores: a correctness setup, not a speed-up.
    return ([f"/cpu:{i}" for i in range(num_towers)],
            tf1.ConfigProto(device_count={"CPU": num_towers}, allow_soft_placement=True))


def _placement(tower_device, variables_device):
    """Variables on ``variables_device``, every other op on the tower's device."""
    def place(op):
        return variables_device if op.type in VARIABLE_OPS else tower_device
    return place


def _pixel_weight_sum(labels, config, class_weights):
    """``W``: the sum of the pixel weights losses.loss() divides by (class-weighted valid pixels)."""
    valid = tf.not_equal(labels, config.void_label)
    weights = tf.cast(valid, tf.float32)
    if class_weights is not None:
        safe = tf.where(valid, labels, tf.zeros_like(labels))
        weights *= tf.gather(tf.constant(class_weights, tf.float32), safe)
    return tf.reduce_sum(weights)


def build_multi_tower_training_graph(config, devices, variables_device="/cpu:0"):
    """The training graph of graph.build_training_graph, replicated over ``devices``.

    Args:
      config: the RunConfig.
      devices: one device string per tower, e.g. ['/gpu:0', '/gpu:1'].
      variables_device: where the shared variables live.

    Returns:
      TowerGraph: the fields of graph.TrainingGraph for the whole batch
      (``logits``/``predictions`` concatenated, ``data_loss`` the loss of the
      whole batch) plus ``grads_and_vars`` (the combined gradient before it is
      applied) and ``devices``.
    """
    num_towers = len(devices)
    tf1.set_random_seed(config.seed)
    with tf.device(variables_device):
        images = tf1.placeholder(tf.float32, [None, None, None, 3], name="images")
        labels = tf1.placeholder(tf.int64, [None, None, None], name="labels")
        is_training = tf1.placeholder_with_default(False, [], name="is_training")
        global_step = tf1.train.get_or_create_global_step()
        time_fraction = graph.time_fraction_input(config)
        learning_rate = graph.learning_rate_schedule(config, global_step, time_fraction)
        optimizer = graph.make_optimizer(config, learning_rate)
        # as even as possible; a tower may get nothing in evaluation (a short last batch)
        batch = tf.shape(images)[0]
        sizes = batch // num_towers + tf.cast(tf.range(num_towers) < batch % num_towers,
                                              tf.int32)
        image_parts = tf.split(images, sizes, num=num_towers)
        label_parts = tf.split(labels, sizes, num=num_towers)
    class_weights = None if config.class_weights is None else list(config.class_weights)

    tower_logits, tower_losses, tower_weights, tower_grads = [], [], [], []
    for i, device in enumerate(devices):
        with tf1.device(_placement(device, variables_device)), tf.name_scope(f"tower_{i}"):
            updates_before = len(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS))
            logits = model.inference(image_parts[i], num_classes=config.num_classes,
                                     variant=config.variant, backbone=config.backbone,
                                     width=config.width, dropout=config.dropout,
                                     input_scale=config.input_scale,
                                     is_training=is_training)
            data_loss = losses.loss(logits, label_parts[i], num_classes=config.num_classes,
                                    void_label=config.void_label, class_weights=class_weights,
                                    variant=config.loss_variant)
            tower_weights.append(_pixel_weight_sum(label_parts[i], config, class_weights))
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

    with tf.device(devices[0]):
        logits = tf.concat(tower_logits, axis=0, name="logits")
        decision = graph.decision_logits(logits, config)
        predictions = losses.predictions(decision)
        valid = tf.not_equal(labels, config.void_label)
        correct = tf.logical_and(valid, tf.equal(predictions, labels))
        pixel_accuracy = tf.math.divide_no_nan(tf.reduce_sum(tf.cast(correct, tf.float32)),
                                               tf.reduce_sum(tf.cast(valid, tf.float32)))
    summary_op = tf1.summary.merge([
        tf1.summary.scalar("loss/data", data_loss),
        tf1.summary.scalar("loss/total", total_loss),
        tf1.summary.scalar("learning_rate", learning_rate),
        tf1.summary.scalar("train/pixel_accuracy", pixel_accuracy),
    ])
    return TowerGraph(images=images, is_training=is_training, logits=logits,
                      predictions=predictions, probabilities=losses.probabilities(decision),
                      labels=labels, data_loss=data_loss, total_loss=total_loss,
                      pixel_accuracy=pixel_accuracy, learning_rate=learning_rate,
                      global_step=global_step, train_op=train_op, summary_op=summary_op,
                      time_fraction=time_fraction, grads_and_vars=grads_and_vars, devices=list(devices))


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


def train_with_towers(requested, train_dir, num_towers, explicit=(), log=print):
    """``fcn-tf1 train --towers N``: train.train with the multi-tower graph.

    Returns:
      the dict of train.train (``step``, ``stopped_by``, ``losses``,
      ``validation``, ``config``).
    """
    devices, session_config = tower_devices(num_towers)

    def check_config(config):
        if config.batch_size < num_towers:
            raise ConfigError(f"--towers {num_towers}: needs a batch size of at least "
                              f"{num_towers}, the run has {config.batch_size}")

    return train.train(requested, train_dir, explicit, log,
                       build_graph=lambda config: build_multi_tower_training_graph(config, devices),
                       session_config=session_config, check_config=check_config,
                       where=f" on {num_towers} towers ({', '.join(devices)})")
