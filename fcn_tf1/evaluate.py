"""Evaluation: full-resolution inference into a streaming confusion matrix, FCN metrics.

``evaluate_in_session`` scores any stream of batches inside an open Session
(the training loop's validation pass uses it); ``run_eval`` is ``fcn-tf1
eval``: it rebuilds a trained run from its config.json and checkpoint.
"""
import time


from fcn_tf1 import batches, h5data, load_run, metrics, rundir, siftflow
from fcn_tf1.errors import FcnError


def evaluate_in_session(session, net, batch_iter, num_classes, void_label, class_names,
                        should_stop=None, on_batch=None):
    """Runs every batch of ``batch_iter`` through ``net`` and scores the predictions.

    Args:
      session: a tf.compat.v1.Session holding trained variables.
      net: an InferenceGraph (``images`` placeholder, ``predictions`` tensor).
      batch_iter: yields (images float32 [B,H,W,3] 0..255, labels int64 [B,H,W], names).
      num_classes, void_label, class_names: the label space.
      should_stop: optional callable; when it returns True the pass stops early
        and the result covers the images seen so far.
      on_batch: optional callable(images, labels, predictions, names) for side
        outputs (PNGs).

    Returns:
      dict of ``metrics.compute_metrics`` plus ``seconds`` (wall time) and
      ``forward_seconds`` (time inside session.run).
    """
    confusion = metrics.ConfusionMatrix(num_classes=num_classes, void_label=void_label)
    seen = 0
    forward_seconds = 0.0
    start = time.perf_counter()
    for images, labels, names in batch_iter:
        t0 = time.perf_counter()
        predictions = session.run(net.predictions, {net.images: images})
        forward_seconds += time.perf_counter() - t0
        confusion.update(labels, predictions)
        seen += len(names)
        if on_batch is not None:
            on_batch(images, labels, predictions, names)
        if should_stop is not None and should_stop():
            break
    result = metrics.compute_metrics(confusion.matrix, class_names, num_images=seen)
    result["seconds"] = time.perf_counter() - start
    result["forward_seconds"] = forward_seconds
    return result


def _views(config, test_scales, test_flip):
    """What the net sees per image, for the log."""
    scales = [config.input_scale * multiple for multiple in (test_scales or (1.0,))]
    text = ", ".join(f"{scale:g}" for scale in scales)
    views = len(scales) * (2 if test_flip else 1)
    if views == 1:
        return f"one view at input scale {text}"
    return (f"{views} views averaged: input scale {text}" +
            (", each also mirrored left-right" if test_flip else ""))


def validation_indices(dataset, val_fraction):
    """Indices of the deterministic validation split of an open H5Dataset."""
    if val_fraction <= 0:
        return []
    return dataset.split(val_fraction)[1]


def run_eval(train_dir, checkpoint=None, data=None, data_dir=None, split=None, names_file=None,
             batch_size=8, json_out=None, test_scales=None, test_flip=False, prior_correction=None,
             log=print):
    """``fcn-tf1 eval``: scores a trained run on a data source and prints the table.

    The data source is ``data`` (all images of an HDF5 file), or ``data_dir``
    (a released SIFT Flow root with ``split`` / ``names_file``), or, when
    neither is given, the run's own validation split. ``test_scales`` (multiples
    of the run's input_scale) and ``test_flip`` average the predictions over
    test-time views; without them the net runs once per image, as in training.
    ``prior_correction`` (tau) replaces the run's own (load_run.with_prior_correction).
    """
    with load_run.open_trained(train_dir, checkpoint, test_scales, test_flip,
                              prior_correction) as (
            config, session, net, checkpoint):
        class_names = list(siftflow.CLASS_NAMES)
        if data_dir is not None:
            source = f"{data_dir} ({names_file or split or 'trainval'})"
            batch_iter = batches.iterate_released(data_dir, split, names_file, batch_size)
        else:
            path = data or config.data
            with h5data.H5Dataset(path) as dataset:
                class_names = list(dataset.class_names)
                indices = None if data is not None else validation_indices(dataset,
                                                                           config.val_fraction)
            if indices == []:
                raise FcnError(f"{train_dir}: the run has no validation split (val_fraction 0); "
                               "give --data or --data-dir")
            source = f"{path} ({'all images' if indices is None else 'validation split'})"
            batch_iter = batches.iterate_batches(path, indices, batch_size)
        correction = (f"; prior correction {config.prior_correction:g}"
                      if config.prior_correction else "")
        log(f"evaluating {checkpoint} on {source}; {_views(config, test_scales, test_flip)}"
            f"{correction}")
        result = evaluate_in_session(session, net, batch_iter, config.num_classes,
                                     config.void_label, class_names)
    log(metrics.format_table(result))
    log(f"{result['num_images']} images in {result['seconds']:.1f} s "
        f"({result['forward_seconds']:.1f} s in the forward pass)")
    if json_out is not None:
        rundir.write_json(json_out, dict({k: v for k, v in result.items()
                                          if k not in ("seconds", "forward_seconds")},
                                         prior_correction=config.prior_correction))
        log(f"wrote {json_out}")
    return result
