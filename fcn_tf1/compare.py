"""The reference comparison of the two loss variants (``fcn-tf1 compare``).

    run_compare(data_path, batch_size=4, repeats=7, json_out=None, seed=0, ...) -> dict
    read_void_batch(data_path, batch_size)   -> (images, labels, names)
    void_batch(dataset, batch_size)          the same from an open h5data.H5Dataset
    compare_variants(images, labels, ...)    -> the report dict
    format_report(report)                    -> str

Both variants of losses.loss() are built on ONE inference() graph (one set
of variables, one forward pass) and evaluated on the same real batch: the
first ``batch_size`` images of the HDF5 file that contain void pixels, so
the void masking is exercised. Reported:

* ``loss_reshape``, ``loss_reshape_free`` and ``max_abs_loss_diff``;
* ``max_abs_grad_diff``: max over every trainable variable and entry of
  |g_reshape - g_reshape_free|;
* ``max_rel_grad_diff``: max over variables of
  max|g_r - g_f| / max(max|g_r|, max|g_f|), i.e. the difference relative to
  the variable's largest gradient entry, so entries that are tiny by chance
  do not blow it up (0 where both gradients are exactly zero);
* ``step_time_reshape_s``, ``step_time_reshape_free_s``: median wall time
  of one full training step (forward, backward, momentum update, batch norm
  updates) with each variant over ``repeats`` interleaved runs after
  warm-up; before every timed step all variables (weights, momentum slots,
  moving averages) are reset to the same snapshot, so both variants time
  identical work; ``time_ratio`` = reshape_free / reshape.

The model runs in training mode (batch statistics, dropout: one forward
pass serves both variants, so they see the same dropout mask). The score
layers start at zero, which blocks every gradient below them at step 0, so
the comparison is made after ``burn_in`` momentum steps from the seeded
initialisation, where every variable has a gradient.

The HDF5 file of ``fcn-tf1 prepare`` is read through h5data.H5Dataset, which
validates its structure and every label map read; its ``num_classes`` and
``void_label`` size the model and the loss.
"""
import statistics
import sys
import time

import numpy as np
import tensorflow as tf

from fcn_tf1 import h5data, losses, model, rundir
from fcn_tf1.config import LOSS_VARIANTS
from fcn_tf1.errors import ConfigError


def read_void_batch(data_path, batch_size):
    """The first ``batch_size`` images of an HDF5 file that contain void pixels.

    Returns:
        as :func:`void_batch`.

    Raises:
        DataError: missing, unreadable or malformed file, bad labels.
    """
    with h5data.H5Dataset(data_path) as dataset:
        return void_batch(dataset, batch_size)


def void_batch(dataset, batch_size):
    """The first ``batch_size`` images of ``dataset`` that contain void pixels.

    Falls back to the first images without void when too few have any. Only
    images of the first image's size are taken (a batch has one size). The
    label maps are read one at a time, and only until enough images with void
    are found.

    Args:
        dataset: an open h5data.H5Dataset.
        batch_size: positive int.

    Returns:
        (images float32 [B, H, W, 3], labels int64 [B, H, W], names list of str),
        in file order.

    Raises:
        DataError: a label map outside the dataset's classes and void label.
    """
    chosen, labels = [], {}
    same_size = [i for i in range(len(dataset)) if dataset.size(i) == dataset.size(0)]
    for index in same_size:
        label = dataset.label(index)
        if (label == dataset.void_label).any():
            chosen.append(index)
            labels[index] = label
            if len(chosen) == batch_size:
                break
    if len(chosen) < batch_size:  # too few images with void: fill with the first others
        taken = set(chosen)
        others = [i for i in same_size if i not in taken]
        chosen += others[:batch_size - len(chosen)]
    chosen.sort()
    images = np.stack([dataset.image(i) for i in chosen]).astype(np.float32)
    batch_labels = np.stack([labels[i] if i in labels else dataset.label(i)
                             for i in chosen]).astype(np.int64)
    return images, batch_labels, [dataset.names[i] for i in chosen]


def _grad_diffs(names, grads_a, grads_b):
    """(max abs diff, max relative diff, variable of each or None when the diff is 0)."""
    max_abs, max_rel, worst_abs, worst_rel = 0.0, 0.0, None, None
    for name, a, b in zip(names, grads_a, grads_b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        diff = float(np.max(np.abs(a - b)))
        scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
        rel = diff / scale if scale > 0 else 0.0
        if diff > max_abs:
            max_abs, worst_abs = diff, name
        if rel > max_rel:
            max_rel, worst_rel = rel, name
    return max_abs, max_rel, worst_abs, worst_rel


def compare_variants(images, labels, num_classes, void_label, repeats=7, seed=0, variant="fcn8s",
                     backbone="compact", width=32, learning_rate=0.01, momentum=0.9, burn_in=2,
                     warmup=2):
    """Runs the comparison on one batch; returns the report dict (see module docstring).

    Args:
        images: float32 [B, H, W, 3], RGB 0..255.
        labels: int64 [B, H, W], 0..num_classes-1 or void_label.
        repeats: timed steps per variant (median reported).
        seed: graph-level random seed for the initial weights and dropout.
        variant, backbone, width: the model (see model.inference).
        learning_rate, momentum: the momentum optimizer of the training step.
        burn_in: momentum steps taken before the gradient comparison.
        warmup: untimed steps per variant before timing.
        num_classes, void_label: the label contract of ``labels``.
    """
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(seed)
        images_in = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], "images")
        labels_in = tf.compat.v1.placeholder(tf.int64, [None, None, None], "labels")
        logits = model.inference(images_in, num_classes, variant, backbone, width, is_training=True)
        trainables = tf.compat.v1.trainable_variables("fcn/")
        loss_of, grads_of, train_of = {}, {}, {}
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        for name in LOSS_VARIANTS:
            loss_of[name] = losses.loss(logits, labels_in, num_classes, void_label, variant=name)
            grads_of[name] = tf.gradients(loss_of[name], trainables)
            optimizer = tf.compat.v1.train.MomentumOptimizer(
                learning_rate, momentum, name=f"momentum_{name}")
            with tf.control_dependencies(update_ops):
                train_of[name] = optimizer.apply_gradients(zip(grads_of[name], trainables))
        all_variables = tf.compat.v1.global_variables()
        num_parameters = model.count_parameters()
        feed = {images_in: images, labels_in: labels}

        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for _ in range(burn_in):
                session.run(train_of["reshape"], feed)
            snapshot = session.run(all_variables)
            reset_feed = {v.initializer.inputs[1]: value for v, value in zip(all_variables, snapshot)}
            initializers = [v.initializer for v in all_variables]

            def reset():
                session.run(initializers, reset_feed)

            values = session.run({"loss": loss_of, "grads": grads_of}, feed)
            for name in LOSS_VARIANTS:
                for _ in range(warmup):
                    reset()
                    session.run(train_of[name], feed)
            times = {name: [] for name in LOSS_VARIANTS}
            for repeat in range(repeats):
                order = LOSS_VARIANTS if repeat % 2 == 0 else LOSS_VARIANTS[::-1]
                for name in order:
                    reset()
                    start = time.perf_counter()
                    session.run(train_of[name], feed)
                    times[name].append(time.perf_counter() - start)

    names = [v.op.name for v in trainables]
    max_abs, max_rel, worst_abs, worst_rel = _grad_diffs(
        names, values["grads"]["reshape"], values["grads"]["reshape_free"])
    zero_grads = [n for n, g in zip(names, values["grads"]["reshape"]) if not np.any(g)]
    step = {name: statistics.median(times[name]) for name in LOSS_VARIANTS}
    void = int(np.count_nonzero(labels == void_label))
    return {
        "loss_reshape": float(values["loss"]["reshape"]),
        "loss_reshape_free": float(values["loss"]["reshape_free"]),
        "max_abs_loss_diff": abs(float(values["loss"]["reshape"])
                                 - float(values["loss"]["reshape_free"])),
        "max_abs_grad_diff": max_abs,
        "max_rel_grad_diff": max_rel,
        "step_time_reshape_s": step["reshape"],
        "step_time_reshape_free_s": step["reshape_free"],
        "time_ratio": step["reshape_free"] / step["reshape"],
        "max_abs_grad_diff_variable": worst_abs,
        "max_rel_grad_diff_variable": worst_rel,
        "variables_with_zero_gradient": zero_grads,
        "num_trainable_variables": len(trainables),
        "num_parameters": num_parameters,
        "batch_shape": list(images.shape),
        "num_valid_pixels": int(labels.size - void),
        "num_void_pixels": void,
        "model": {"variant": variant, "backbone": backbone, "width": width,
                  "is_training": True},
        "optimizer": {"name": "momentum", "learning_rate": learning_rate, "momentum": momentum},
        "seed": seed,
        "burn_in_steps": burn_in,
        "repeats": repeats,
        "step_times_reshape_s": times["reshape"],
        "step_times_reshape_free_s": times["reshape_free"],
        "tensorflow_version": tf.__version__,
    }


def _where(variable):
    return f"   (in {variable})" if variable else ""


def format_report(report):
    """The human-readable report (str)."""
    b, h, w, _ = report["batch_shape"]
    m = report["model"]
    total = report["num_valid_pixels"] + report["num_void_pixels"]
    lines = [
        f"reshape vs reshape-free loss on {b} images ({h}x{w}) of {report.get('data', 'a batch')}",
        f"  images: {', '.join(report.get('images', [])) or '-'}",
        f"  void pixels: {report['num_void_pixels']} of {total}",
        f"  model: {m['backbone']} {m['variant']} width {m['width']}, "
        f"{report['num_parameters']:,} parameters in {report['num_trainable_variables']} "
        f"trainable variables, training mode, after {report['burn_in_steps']} momentum steps",
        f"loss, reshape            {report['loss_reshape']:.7f}",
        f"loss, reshape-free       {report['loss_reshape_free']:.7f}",
        f"max |loss difference|    {report['max_abs_loss_diff']:.3g}",
        f"max |grad difference|    {report['max_abs_grad_diff']:.3g}"
        + _where(report["max_abs_grad_diff_variable"]),
        f"max relative grad diff   {report['max_rel_grad_diff']:.3g}"
        + _where(report["max_rel_grad_diff_variable"]) + "   (per variable, relative to its "
        "largest gradient entry)",
        f"training step, reshape       {report['step_time_reshape_s']:.4f} s",
        f"training step, reshape-free  {report['step_time_reshape_free_s']:.4f} s",
        f"time ratio (free / reshape)  {report['time_ratio']:.3f}"
        f"   (median of {report['repeats']} interleaved steps each)",
    ]
    if report["variables_with_zero_gradient"]:
        lines.append(f"note: zero gradient in {len(report['variables_with_zero_gradient'])} "
                     "variables: " + ", ".join(report["variables_with_zero_gradient"]))
    if report["num_void_pixels"] == 0:
        lines.append("note: no void pixels in this batch, the masking is not exercised")
    return "\n".join(lines)


def run_compare(data_path, batch_size=4, repeats=7, json_out=None, seed=0, variant="fcn8s",
                backbone="compact", width=32, out=None):
    """``fcn-tf1 compare``: reads the batch, compares, prints, optionally writes JSON.

    Args:
        data_path: HDF5 file with images/labels/names.
        batch_size: images in the batch (positive int).
        repeats: timed training steps per variant (positive int).
        json_out: path to write the report as JSON, or None.
        seed: graph-level random seed.
        variant, backbone, width: the model (see model.inference).
        out: text stream for the report (stdout by default).

    Returns:
        the report dict (JSON keys: see the module docstring).
    """
    if batch_size < 1 or repeats < 1:
        raise ConfigError(f"--batch-size and --repeats must be positive, got {batch_size}, {repeats}")
    with h5data.H5Dataset(data_path) as dataset:
        images, labels, names = void_batch(dataset, batch_size)
        num_classes, void_label = dataset.num_classes, dataset.void_label
    report = compare_variants(images, labels, repeats=repeats, seed=seed, variant=variant,
                              backbone=backbone, width=width, num_classes=num_classes,
                              void_label=void_label)
    report["data"] = str(data_path)
    report["images"] = names
    print(format_report(report), file=out or sys.stdout)
    if json_out is not None:
        rundir.write_json(json_out, report)
    return report
