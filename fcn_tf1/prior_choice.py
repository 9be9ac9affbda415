"""The prior correction chosen at the end of a run from its own validation scores.

API::

    GRID                                   the corrections tried: 0, 0.1, ..., 1.5
    sweep(session, net, config, batch_iter, class_names, should_stop=None, taus=GRID)
                                           -> {tau: metrics dict}, one pass over the images
    choose(scores, floor, rule="largest")  -> among the taus whose pixel accuracy >= floor,
                                              the largest, or (rule "mean_iou") the best mean IU
    floor_missed(scores, chosen, floor)    -> a log line when even ``chosen`` is under the floor
    choose_for_run(session, net, run)      sweep + choose + config.json
                                           -> (the run with it, the sweep for metrics.json)

A run with ``prior_correction_floor`` f > 0 (e.g. 0.79), or with
``prior_correction_choice`` "mean_iou", does not keep a fixed prior
correction: once training ends it scores its validation images with every
tau of GRID in one pass (the logits are computed once; each tau only moves
the argmax), keeps among the taus whose pixel accuracy is at least f the
largest ("largest", for mean class accuracy) or the one of best mean IU
("mean_iou"; 0 when no tau keeps the floor: the plain argmax), and writes it
to config.json, so the final validation, eval, predict and export use it.
How far a correction can go before it costs the pixel floor depends on how
far the network trained, so a recipe chosen this way holds on a slower host,
where a constant tuned on a faster one over-corrects. The tau is tuned on
the validation images: their scores are not an unseen-data estimate.
"""
import dataclasses

import numpy as np

from fcn_tf1 import batches, config as config_lib, losses, metrics, validation

GRID = tuple(round(0.1 * k, 1) for k in range(16))
SWEEP_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iou")  # kept in metrics.json


def sweep(session, net, config, batch_iter, class_names, should_stop=None, taus=GRID):
    """Metrics of the images of ``batch_iter`` for each correction of ``taus``.

    ``net.logits`` must be the logits before any correction (a training or
    inference graph); a training graph that averages its weights is scored
    with the averages, as in validation. ``config.class_priors`` must be set.
    ``batch_iter`` yields (images, labels, names) as evaluate.evaluate_in_session's.
    """
    offsets = [np.asarray(losses.prior_offsets(config.class_priors, tau), np.float32)
               for tau in taus]
    counts = [metrics.ConfusionMatrix(config.num_classes, config.void_label) for _ in taus]
    with validation.weights(session, net):
        for images, labels, _ in batch_iter:
            logits = session.run(net.logits, {net.images: images})
            for count, offset in zip(counts, offsets):
                count.update(labels, np.argmax(logits + offset, axis=-1))
            if should_stop is not None and should_stop():
                break
    return {tau: metrics.compute_metrics(count.matrix, class_names, count.num_images)
            for tau, count in zip(taus, counts)}


def sweep_record(scores):
    """The sweep as JSON rows: tau and SWEEP_KEYS."""
    return [dict({"prior_correction": tau}, **{key: result[key] for key in SWEEP_KEYS})
            for tau, result in scores.items()]


def choose(scores, floor, rule="largest"):
    """Among the taus of ``scores`` whose pixel accuracy is at least ``floor``, the
    largest (``rule`` "largest") or the one of best mean IU, the smaller on a tie
    ("mean_iou"); 0.0 if none."""
    kept = [tau for tau, result in scores.items()
            if result["pixel_accuracy"] is not None and result["pixel_accuracy"] >= floor]
    if rule == "largest":
        return max(kept, default=0.0)
    if rule != "mean_iou":
        raise ValueError(f"rule {rule!r}: expected one of {config_lib.PRIOR_CHOICES}")
    kept = [tau for tau in sorted(kept) if scores[tau]["mean_iou"] is not None]
    return max(kept, key=lambda tau: scores[tau]["mean_iou"], default=0.0)


def describe_rule(floor, rule):
    """The choice in words, for the log."""
    best = "the largest" if rule == "largest" else "the best mean IU"
    return best + (f" with pixel accuracy >= {100 * floor:g} %" if floor else "")


def floor_missed(scores, chosen, floor):
    """None, or one line saying that no tau (not even 0, ``chosen``) keeps the pixel floor."""
    pixel = scores[chosen]["pixel_accuracy"]
    if not floor or (pixel is not None and pixel >= floor):
        return None
    at = "no pixel scored" if pixel is None else f"{100 * pixel:.2f} % at tau {chosen:g}"
    return (f"warning: no correction keeps pixel accuracy >= {100 * floor:g} % ({at}); no "
            "correction is applied")


def format_sweep(scores, chosen=None, rule=None):
    """The sweep as log lines, the ``chosen`` row marked (with its ``rule`` in words)."""
    lines = [] if rule is None else [f"prior correction chosen on the validation images: {rule}"]
    lines.append("   tau   pixel acc   mean acc   mean IU")
    for tau, result in scores.items():
        mark = "  <- chosen" if tau == chosen else ""
        lines.append(f"{tau:6.1f}" + "".join(
            f"  {100 * (result[key] or 0.0):9.2f}" for key in SWEEP_KEYS) + mark)
    return lines


def choose_for_run(session, net, run):
    """Sweeps, chooses, logs and writes config.json.

    Returns ``(run with the chosen prior_correction, record)``, ``record`` the
    floor and the sweep for metrics.json; a sweep cut short by a stop request
    changes nothing and returns ``(run, None)``.
    """
    config = run.config
    scores = sweep(session, net, config,
                   batches.iterate_batches(config.data, run.val_indices, config.batch_size),
                   run.class_names, run.stop)
    if run.stop():
        return run, None
    floor, rule = config.prior_correction_floor, config.prior_correction_choice
    chosen = choose(scores, floor, rule)
    for line in format_sweep(scores, chosen, describe_rule(floor, rule)):
        run.log(line)
    missed = floor_missed(scores, chosen, floor)
    if missed:
        run.log(missed)
    config = config.replace(prior_correction=chosen)
    config_lib.save(config, run.train_dir)
    record = {"prior_correction_floor": floor, "prior_correction_choice": rule,
              "prior_correction_floor_kept": missed is None,
              "prior_correction_sweep": sweep_record(scores)}
    return dataclasses.replace(run, config=config), record
