"""Evaluation: full-resolution inference into a streaming confusion matrix, FCN metrics.

``evaluate_in_session`` scores any stream of batches inside an open Session
(the training loop's validation pass uses it); ``run_eval`` is ``fcn-tf1
eval``: it rebuilds a trained run from its config.json and checkpoint.
"""
import time


from fcn_tf1 import batches, datasets, h5data, layouts, load_run, metrics, prior_choice, rundir
from fcn_tf1.errors import ConfigError, FcnError


def evaluate_in_session(session, net, batch_iter, num_classes, void_label, class_names,
                        should_stop=None, on_batch=None, feed=None):
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
      feed: optional further feed_dict entries (graph.prior_offsets_feed).

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
        predictions = session.run(net.predictions, {**(feed or {}), net.images: images})
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


def training_names(config):
    """The names of the images the run trained on (its data file's training split)."""
    with h5data.H5Dataset(config.data) as dataset:
        return {dataset.names[i] for i in dataset.split(config.val_fraction)[0]}


def check_class_set(config, class_names, source):
    """ConfigError unless ``source``'s classes are the run's (count, and names when recorded)."""
    run_names = datasets.run_classes(config)[0]
    if len(class_names) != config.num_classes or (
            config.class_names is not None and list(class_names) != run_names):
        raise ConfigError(f"{source}: has {len(class_names)} classes ({', '.join(class_names)[:60]}"
                          f"), the run predicts {config.num_classes} "
                          f"({', '.join(run_names)[:60]}); score it with a run of its classes")


def choose_images(train_dir, config, data=None, data_dir=None, split=None, names_file=None,
                  include_training=False, log=print):
    """What ``fcn-tf1 eval`` scores: (description, names to score or None for the file's
    validation split, path or root, class names).

    Never the run's training images unless asked: with no source, the run's own
    validation images; with a source but no explicit split, its images minus the
    ones the run trained on; an explicit ``split`` / ``names_file`` or
    ``include_training`` scores every listed image, with a warning when some
    are training images.
    """
    if data is None and data_dir is None:
        if config.val_fraction <= 0:
            raise FcnError(f"{train_dir}: the run has no validation split (val_fraction 0); "
                           "give --data or --data-dir")
        with h5data.H5Dataset(config.data) as dataset:
            names = [dataset.names[i] for i in dataset.split(config.val_fraction)[1]]
            return f"{config.data} (the run's validation split)", names, config.data, list(
                dataset.class_names)
    if data is not None:
        with h5data.H5Dataset(data) as dataset:
            listed, class_names = list(dataset.names), list(dataset.class_names)
        source = str(data)
    else:
        descriptor = layouts.descriptor_for(data_dir)
        listed = layouts.list_pairs(data_dir, descriptor, split, names_file).names
        class_names = list(descriptor.class_names)
        source = f"{data_dir} ({names_file or split or layouts.default_split(descriptor)})"
    check_class_set(config, class_names, source)
    chosen = include_training or split is not None or names_file is not None
    try:
        trained_on = training_names(config)
    except FcnError as err:
        if chosen:
            log(f"warning: cannot tell which images the run trained on ({err})")
            return source, listed, data or data_dir, class_names
        raise FcnError(f"cannot tell which images of {source} the run trained on ({err}); "
                       "pass --include-training-images to score every image") from None
    seen = [name for name in listed if name in trained_on]
    if chosen:
        if seen:
            log(f"warning: {len(seen)} of the {len(listed)} images of {source} are training "
                "images of this run: these numbers are not validation numbers")
        return source, listed, data or data_dir, class_names
    unseen = [name for name in listed if name not in trained_on]
    if not unseen:
        raise FcnError(f"{source}: all {len(listed)} images are training images of the run; "
                       "pass --include-training-images (or an explicit --split) to score them")
    return (f"{source}: the {len(unseen)} of {len(listed)} images the run did not train on",
            unseen, data or data_dir, class_names)


def run_eval(train_dir, checkpoint=None, data=None, data_dir=None, split=None, names_file=None,
             batch_size=8, json_out=None, test_scales=None, test_flip=False, prior_correction=None,
             include_training=False, sweep=False, log=print):
    """``fcn-tf1 eval``: scores a trained run on a data source and prints the table.

    The data source is ``data`` (an HDF5 file), or ``data_dir`` (a released
    SIFT Flow root with ``split`` / ``names_file``), or, when neither is given,
    the run's own validation split; choose_images says which images count.
    ``test_scales`` (multiples of the run's input_scale) and ``test_flip``
    average the predictions over test-time views; without them the net runs
    once per image, as in training. ``prior_correction`` (tau) replaces the
    run's own (load_run.with_prior_correction). ``sweep``: score every
    correction of prior_choice.GRID in one pass instead, print that table and
    return {tau: metrics dict}.
    """
    if sweep and prior_correction is not None:
        raise ConfigError("--prior-correction-sweep scores every correction; "
                          "leave out --prior-correction")
    with load_run.open_trained(train_dir, checkpoint, test_scales, test_flip,
                               prior_correction) as (config, session, net, checkpoint):
        source, names, where, class_names = choose_images(
            train_dir, config, data, data_dir, split, names_file, include_training, log)
        if data_dir is not None:
            batch_iter = batches.iterate_released(data_dir, split, names_file, batch_size,
                                                  only=names)
        else:
            with h5data.H5Dataset(where) as dataset:
                indices = dataset.indices_of(names)
            batch_iter = batches.iterate_batches(where, indices, batch_size)
        correction = (f"; prior correction {config.prior_correction:g}"
                      if config.prior_correction else "")
        log(f"evaluating {checkpoint} on {source}; {_views(config, test_scales, test_flip)}"
            f"{'; every prior correction of 0..1.5' if sweep else correction}")
        if sweep:
            config = load_run.with_class_priors(config, "--prior-correction-sweep")
            return _sweep(session, net, config, batch_iter, class_names, source, json_out, log)
        result = evaluate_in_session(session, net, batch_iter, config.num_classes,
                                     config.void_label, class_names)
    log(metrics.format_table(result))
    log(f"{result['num_images']} images in {result['seconds']:.1f} s "
        f"({result['forward_seconds']:.1f} s in the forward pass)")
    if json_out is not None:
        rundir.write_json(json_out, dict({k: v for k, v in result.items()
                                          if k not in ("seconds", "forward_seconds")},
                                         prior_correction=config.prior_correction,
                                         source=source))
        log(f"wrote {json_out}")
    return result


def _sweep(session, net, config, batch_iter, class_names, source, json_out, log):
    scores = prior_choice.sweep(session, net, config, batch_iter, class_names)
    for line in prior_choice.format_sweep(scores):
        log(line)
    if json_out is not None:
        rundir.write_json(json_out, {"prior_correction_sweep": prior_choice.sweep_record(scores),
                                     "source": source})
        log(f"wrote {json_out}")
    return scores
