"""Validation during and at the end of training: score, then report, then write files.

API::

    validate(session, net, run, keep_pngs=0)   -> (metrics dict, [(name, picture)])
    report(run, result, step, writer, clock=None, pngs=())   TensorBoard, the table, the curve
    write_outputs(run, result, pngs, step)          metrics.json and prediction PNGs

``validate`` only computes; writing is separate, so a pass cut short by a stop
request is never written over a complete metrics.json.
"""
import contextlib
import pathlib

import numpy as np

from fcn_tf1 import batches, datasets, evaluate, graph, metrics, rundir, summaries, visualize
from fcn_tf1.errors import FcnError
from fcn_tf1.run_clock import CURVE_PNG

METRICS_NAME = "metrics.json"
TENSORBOARD_PICTURES = 3  # validation images shown in TensorBoard at every pass
PREDICTIONS_DIR = "predictions"


def validate(session, net, run, keep_pngs=0, averaged=True):
    """Scores ``run``'s validation images with ``net`` in ``session``.

    Stops early (covering the images seen so far) when ``run.stop()`` turns
    True. Returns the metrics dict of evaluate.evaluate_in_session and up to
    ``keep_pngs`` (name, input | truth | prediction picture) pairs. A training
    graph that averages its weights (``net.averager``) is scored with the
    averaged weights unless ``averaged`` is false.
    """
    with weights(session, net, averaged):
        return _validate(session, net, run, keep_pngs)


def weights(session, net, averaged=True):
    """Context: ``net`` holds its averaged weights inside, when it has them and ``averaged``."""
    averager = getattr(net, "averager", None)
    return averager.swapped(session) if averager and averaged else contextlib.nullcontext()


def _validate(session, net, run, keep_pngs):
    config = run.config
    pngs = []
    palette = datasets.run_classes(config)[1]

    def keep(images, labels, predictions, names):
        for image, label, prediction, name in zip(images, labels, predictions, names):
            if len(pngs) < keep_pngs:
                pngs.append((name, visualize.triptych(image.astype(np.uint8), label, prediction,
                                                         palette=palette)))

    result = evaluate.evaluate_in_session(
        session, net, batches.iterate_batches(config.data, run.val_indices, config.batch_size),
        config.num_classes, config.void_label, run.class_names, should_stop=run.stop,
        on_batch=keep if keep_pngs else None, feed=graph.prior_offsets_feed(session, config))
    return result, pngs


def report(run, result, step, writer, clock=None, pngs=()):
    """Writes the result to TensorBoard (``writer``: the run's validation writer; the
    first TENSORBOARD_PICTURES of ``pngs`` as pictures), logs the table and, with
    ``clock`` (a run_clock.RunClock) and a complete pass, adds it to the learning curve."""
    pictures = [picture for _, picture in pngs[:TENSORBOARD_PICTURES]]
    for summary in summaries.validation_summaries(result, pictures):
        writer.add_summary(summary, step)
    writer.flush()
    run.log(f"validation at step {step} ({result['num_images']} images, "
            f"{result['seconds']:.1f} s):")
    run.log(metrics.format_table(result))
    if clock is not None and not run.stop():
        clock.validated(step, result, title=curve_title(run))
        run.log(f"learning curve ({len(clock.points)} points, {clock.seconds() / 60:.1f} "
                f"training minutes): {clock.train_dir / CURVE_PNG}")


def curve_title(run):
    """The recipe in words, for the learning curve's title."""
    config = run.config
    crop = "whole images" if config.crop_size is None else f"{config.crop_size} px crops"
    scale = "" if config.input_scale == 1.0 else f" at scale {config.input_scale:g}"
    loss = "" if config.class_weighting == "none" else f", {config.class_weighting} loss"
    if config.lovasz_weight:
        loss += f", Lovasz-softmax term {config.lovasz_weight:g}"
    if config.repeat_factor_threshold:
        loss += f", repeat factor sampling {config.repeat_factor_threshold:g}"
    if config.prior_correction:
        loss += f", prior correction {config.prior_correction:g}"
    return (f"{config.backbone} {config.variant} width {config.width}, batch "
            f"{config.batch_size} {crop}{scale}, {config.optimizer} {config.learning_rate:g} "
            f"{config.lr_schedule}{loss}, {len(run.val_indices)} validation images")


def write_outputs(run, result, pngs, step, extra=None):
    """``metrics.json`` (atomic) and ``predictions/NAME.png`` of the final validation pass;
    ``extra``: more entries for metrics.json."""
    extra = extra or {}
    rundir.write_json(run.train_dir / METRICS_NAME,
                      dict(result, step=step, prior_correction=run.config.prior_correction,
                           **extra))
    out_dir = run.train_dir / PREDICTIONS_DIR
    try:
        out_dir.mkdir(exist_ok=True)
        for name, picture in pngs:
            # names come from the data file: keep only a base name inside out_dir
            visualize.save_png(out_dir / f"{pathlib.PurePath(name).name}.png", picture)
    except OSError as err:
        raise FcnError(f"{out_dir}: cannot write prediction PNGs ({err.strerror or err}); "
                       f"the checkpoint of step {step} is saved") from None
    if pngs:
        run.log(f"wrote {len(pngs)} prediction PNGs (input | truth | prediction) to {out_dir}")


def periodic_pass(session, net, run, step, writer, clock):
    """A validation pass during training: reported, not written to files.

    Returns the metrics dict, or None when a stop request cut the pass short.
    """
    result, pngs = validate(session, net, run, keep_pngs=TENSORBOARD_PICTURES)
    report(run, result, step, writer, clock, pngs)
    return None if run.stop() else result


def final_pass(session, net, run, step, writer, clock=None, extra=None):
    """The end-of-training validation: report it, and write its files only when complete.

    A run that averages its weights is scored with the averages, then with the
    raw weights (metrics.json ``raw_weights``); ``extra``: more entries for
    metrics.json. Returns the metrics dict (None when the run has no validation images or the pass
    was cut short).
    """
    if not run.val_indices:
        return None
    count = run.config.num_prediction_pngs
    result, pngs = validate(session, net, run, keep_pngs=max(count, TENSORBOARD_PICTURES))
    report(run, result, step, writer, clock, pngs)
    extra = dict(extra or {})
    if getattr(net, "averager", None) and not run.stop():
        raw, _ = validate(session, net, run, averaged=False)
        extra["raw_weights"] = {key: raw[key] for key in metrics.SUMMARY_KEYS}
        run.log("the same images with the raw (not averaged) weights: " + ", ".join(
            f"{key} {100 * raw[key]:.2f} %" for key in metrics.SUMMARY_KEYS
            if raw[key] is not None))
    if run.stop():  # a pass cut short must not replace a complete metrics.json
        return None
    write_outputs(run, result, pngs[:count], step, extra)
    return result
