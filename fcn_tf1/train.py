"""The training loop: a tf.compat.v1.Session that feeds batches, checkpoints, resumes exactly.

``train(config, train_dir)`` is the whole job behind ``python run_train.py`` and
``fcn-tf1 train``:

1. checks that the train dir is writable and takes its lock (one trainer per dir);
2. resumes when the dir already holds a run (its config.json wins; options that
   would change the graph or the data order are refused);
3. builds placeholders -> inference() -> loss() -> optimizer (graph.py), restores
   the latest checkpoint (global step, weights, optimizer slots, batch-norm
   statistics) and continues the data stream at batch ``global_step`` — batch k
   depends only on (seed, k), so a resumed run sees exactly the batches an
   uninterrupted one would;
4. runs the Session loop with progress lines, summaries, periodic checkpoints
   and validation passes; stops cleanly on SIGINT/SIGTERM (saving first) and on
   a NaN/Inf loss or NaN/Inf weights (without saving, so the latest checkpoint
   stays good); a killed run resumes from its newest complete checkpoint;
5. saves at the end, evaluates on the validation split, writes metrics.json and
   prediction PNGs.
"""
import math
import pathlib
import time

import numpy as np
import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import batches, evaluate, graph, h5data, losses, progress, rundir, signals, summaries
from fcn_tf1.errors import ConfigError, FcnError

tf1 = tf.compat.v1
CHECKPOINT_PREFIX = "model.ckpt"


class TrainingDiverged(FcnError):
    """The loss became NaN or Inf; nothing was saved after the last good checkpoint."""
    exit_code = 3


def resolve_config(requested, train_dir, explicit=(), log=print):
    """The config this run uses: the saved one when resuming, else ``requested``."""
    has_config = (train_dir / config_lib.CONFIG_NAME).is_file()
    checkpoint = latest_checkpoint(train_dir)
    if checkpoint and not has_config:
        raise ConfigError(f"{train_dir}: holds checkpoints but no config.json; "
                          "cannot tell how to rebuild the graph")
    if not has_config:
        return requested, False
    saved = config_lib.load(train_dir)
    return config_lib.merge_for_resume(saved, requested, set(explicit), train_dir), True


def _with_class_statistics(config, dataset, train_indices, log):
    """``config`` with the class weights and class priors it asks for, both counted on
    its training images in one pass; values already stored (a resumed run) are kept."""
    weigh = config.class_weighting != "none" and config.class_weights is None
    correct = bool(config.prior_correction) and config.class_priors is None
    if not (weigh or correct):
        return config
    counts, presence_pixels = dataset.label_statistics(train_indices)
    if weigh:
        config = _with_class_weights(config, counts, presence_pixels, log)
    if correct:
        config = _with_class_priors(config, counts, log)
    return config


def _with_class_weights(config, counts, presence_pixels, log):
    if config.class_weighting == "median_frequency_global":  # plain frequencies: stronger
        presence_pixels = None
    weights = losses.median_frequency_weights(counts, presence_pixels)
    if config.class_weighting == "sqrt_median_frequency":  # the milder balance
        weights = np.sqrt(weights)
    log(f"class weights ({config.class_weighting}): " + " ".join(f"{w:.2f}" for w in weights))
    return config.replace(class_weights=tuple(float(w) for w in weights))


def _with_class_priors(config, counts, log):
    priors = losses.class_priors(counts)
    boost = np.exp(losses.prior_offsets(priors, config.prior_correction))
    log(f"prior correction {config.prior_correction:g}: predictions weigh each class by "
        f"1/prior^{config.prior_correction:g} (x{boost.min():.3g} to x{boost.max():.3g} before "
        "normalising; the loss is unchanged)")
    return config.replace(class_priors=priors)


def latest_checkpoint(train_dir):
    """The newest complete checkpoint prefix of ``train_dir``, or None.

    The one TensorFlow's ``checkpoint`` state file names; when that file is
    missing, unreadable or names files that are gone (a dir moved by a version
    that wrote absolute paths), the highest ``model.ckpt-STEP`` whose index and
    data files exist. TensorFlow renames both into place only when complete.
    """
    found = tf1.train.latest_checkpoint(str(train_dir))
    if found:
        return found
    steps = []
    for index in pathlib.Path(train_dir).glob(f"{CHECKPOINT_PREFIX}-*.index"):
        step = index.name[len(CHECKPOINT_PREFIX) + 1:-len(".index")]
        if step.isdigit() and any(index.parent.glob(f"{CHECKPOINT_PREFIX}-{step}.data-*")):
            steps.append(int(step))
    return str(pathlib.Path(train_dir) / f"{CHECKPOINT_PREFIX}-{max(steps)}") if steps else None


def _op_error_reason(err):
    """The line of a TensorFlow error that says what went wrong (not "Graph execution error")."""
    for line in str(getattr(err, "message", None) or err).splitlines():
        line = line.strip()
        if line and not line.startswith(("Graph execution error", "Detected at node", "File ",
                                         "Node:", "[[", "Hint:", "Original stack trace")):
            return line[:300]
    return type(err).__name__


def _restore(saver, session, checkpoint):
    try:
        saver.restore(session, checkpoint)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
        raise ConfigError(f"{checkpoint}: checkpoint does not match config.json "
                          f"({_op_error_reason(err)[:200]})") from None
    except tf.errors.OpError as err:  # DataLossError: a damaged file, never silently skipped
        raise FcnError(f"{checkpoint}: unreadable checkpoint ({_op_error_reason(err)[:200]}); "
                       "move its files away to resume from the one before") from None


def _seconds_left(config, step, step_s, clock):
    """Estimated seconds to the end of training: max_steps or the budget, whichever comes first."""
    seconds = step_s * (config.max_steps - step)
    if config.max_minutes:
        seconds = min(seconds, max(0.0, 60.0 * config.max_minutes - clock.seconds()))
    return seconds


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class _Saver:
    """Periodic checkpoints (every N steps and/or every M seconds) that never save NaN weights.

    Paths in the ``checkpoint`` state file are relative (a run dir can be moved),
    and a resumed run takes over the checkpoints the state file lists, so
    ``max_to_keep`` also prunes those of earlier, stopped or killed, processes.
    """

    def __init__(self, config, session, train_dir, log):
        self.progress = None  # a progress.Progress once the starting step is known
        self.saver = tf1.train.Saver(max_to_keep=config.max_to_keep, save_relative_paths=True)
        state = tf1.train.get_checkpoint_state(str(train_dir))
        if state is not None:
            self.saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
        # The loss of a step is computed before its update: an update that overflows shows in
        # the weights first, so they are checked (all float variables, slots included) on save.
        self.weights_finite = tf.reduce_all(tf.stack([
            tf.reduce_all(tf.math.is_finite(v)) for v in tf1.global_variables()
            if v.dtype.base_dtype.is_floating]))
        self.session = session
        self.train_dir = train_dir
        self.prefix = str(train_dir / CHECKPOINT_PREFIX)
        self.every_steps = config.save_every_steps
        self.every_secs = config.save_every_secs
        self.last_step = None
        self.last_time = time.monotonic()
        self.log = log

    def maybe_save(self, step):
        due_steps = self.every_steps and step % self.every_steps == 0
        due_time = self.every_secs and time.monotonic() - self.last_time >= self.every_secs
        if due_steps or due_time:
            self.save(step)

    def save(self, step):
        if step == self.last_step:
            return
        if not self.session.run(self.weights_finite):
            raise TrainingDiverged(
                f"weights are NaN/Inf after step {step} (the loss was still finite): training "
                f"stopped without saving; {self.last_good()}. Lower the learning rate or check "
                "the data")
        try:
            path = self.saver.save(self.session, self.prefix, global_step=step)
        except (tf.errors.OpError, OSError) as err:  # a full disk, a file size limit, ...
            rundir.remove_partial_files(self.train_dir)  # give back what the failed write took
            reason, prefix = _op_error_reason(err)[:200], f"{self.prefix}-{step}"
            latest = latest_checkpoint(self.train_dir)
            if latest and pathlib.Path(latest).name == pathlib.Path(prefix).name:
                # TensorFlow writes the .meta file after it has recorded the checkpoint
                raise FcnError(f"{prefix}: checkpoint saved, but not its .meta graph file "
                               f"({reason}); training stopped") from None
            raise FcnError(f"{prefix}: could not write checkpoint ({reason}); earlier "
                           "checkpoints are kept") from None
        self.last_step = step
        self.last_time = time.monotonic()
        if self.progress is not None:
            self.progress.checkpoint_saved(step)
        self.log(f"saved {path}")

    def last_good(self):
        if self.last_step is None:
            return "no checkpoint was saved yet"
        return f"the latest checkpoint (step {self.last_step}) is the last good one"


def train(requested, train_dir, explicit=(), log=print, build_graph=None, session_config=None,
          check_config=None, where=""):
    """Trains (or resumes) the run in ``train_dir``.

    Args:
      requested: RunConfig from the command line.
      train_dir: pathlib.Path of the run directory (created if missing).
      explicit: names of the config fields the user gave explicitly (checked
        against the saved config when resuming).
      log: a print-like function for progress lines.
      build_graph: config -> TrainingGraph (default graph.build_training_graph;
        the multi-tower trainer passes its own).
      session_config: a tf.compat.v1.ConfigProto for the Session, or None.
      check_config: called with the resolved config before anything is
        written (raises ConfigError to refuse it), or None.
      where: words added to the "starting run" line (e.g. the towers' devices).

    Returns:
      dict with ``step`` (final global step), ``stopped_by`` (None, or the
      signal name), ``losses`` (data loss of every step run here, in order),
      ``validation`` (metrics dict of the final validation pass, or None) and
      ``config`` (the RunConfig used).
    """
    train_dir = rundir.ensure_writable(train_dir)
    with rundir.TrainDirLock(train_dir), signals.StopRequest() as stop:
        removed = rundir.remove_partial_files(train_dir)
        if removed:
            log(f"removed {len(removed)} partial file(s) an interrupted trainer was writing: "
                + ", ".join(removed))
        config, resuming = resolve_config(requested, train_dir, explicit, log)
        if check_config is not None:
            check_config(config)
        with h5data.H5Dataset(config.data) as dataset:
            class_names = list(dataset.class_names)
            train_indices, val_indices = dataset.split(config.val_fraction)
            if not train_indices:
                raise FcnError(f"{config.data}: no training images after the validation split")
            config = _with_class_statistics(config, dataset, train_indices, log)
        config_lib.save(config, train_dir)
        log(f"{'resuming' if resuming else 'starting'} run in {train_dir}{where}: "
            f"{config.backbone} {config.variant} width {config.width}, "
            f"{len(train_indices)} train / {len(val_indices)} val images from {config.data}")
        return _run(config, train_dir, class_names, train_indices, val_indices, stop, log,
                    build_graph or graph.build_training_graph, session_config)


def _run(config, train_dir, class_names, train_indices, val_indices, stop, log, build_graph,
         session_config):
    with tf.Graph().as_default():
        net = build_graph(config)
        session = tf1.Session(config=session_config)
        with session:
            saver = _Saver(config, session, train_dir, log)
            checkpoint = latest_checkpoint(train_dir)
            session.run(tf1.global_variables_initializer())
            if checkpoint:
                _restore(saver.saver, session, checkpoint)
                if checkpoint != tf1.train.latest_checkpoint(str(train_dir)):
                    log("the checkpoint state file is missing or unreadable: using the newest "
                        "complete checkpoint")
                log(f"restored {checkpoint}")
            elif config.vgg16_weights:
                from fcn_tf1 import vgg16_weights
                vgg16_weights.load_vgg16_weights(session, config.vgg16_weights)
                log(f"initialised the VGG16 backbone from {config.vgg16_weights}")
            step = int(session.run(net.global_step))
            saver.last_step = step if checkpoint else None
            saver.progress = progress.Progress(train_dir, step)
            writer = tf1.summary.FileWriter(str(train_dir), session.graph if not checkpoint else None)
            try:
                losses_here = _loop(config, session, net, saver, writer, train_indices,
                                    val_indices, class_names, step, stop, log)
                step = int(session.run(net.global_step))
                saver.save(step)
                validation = None
                if val_indices and not stop():
                    validation = _validate(config, session, net, writer, val_indices, class_names,
                                           step, stop, log, train_dir=train_dir,
                                           clock=saver.progress)
            finally:
                writer.close()
    if stop():
        log(f"stopped by {stop.signal_name} at step {step}; checkpoint saved, "
            "run the same command again to resume")
    return {"step": step, "stopped_by": stop.signal_name, "losses": losses_here,
            "validation": validation, "config": config}


def _loop(config, session, net, saver, writer, train_indices, val_indices, class_names,
          step, stop, log):
    """Runs steps ``step`` .. ``config.max_steps - 1``; returns their data losses."""
    if step >= config.max_steps:
        log(f"run already at step {step} >= max_steps {config.max_steps}; nothing to train "
            "(pass a larger --max-steps to continue)")
        return []
    stream = batches.BatchStream(config.data, train_indices, config.batch_size, seed=config.seed,
                                crop_size=config.crop_size, flip=config.flip,
                                scale_jitter=config.scale_jitter,
                                repeat_factor_threshold=config.repeat_factor_threshold,
                                start_batch=step)
    if stream.repeat_factors is not None:
        factors = stream.repeat_factors
        log(f"repeat factor sampling (threshold {config.repeat_factor_threshold:g}): "
            f"{(factors > 1).mean():.0%} of the {len(factors)} training images oversampled, "
            f"by up to {factors.max():.1f}x (mean factor {factors.mean():.2f})")
    losses_here = []
    window = []  # (step seconds, data seconds) of recent steps
    start_step = step
    with stream:
        while step < config.max_steps and not stop():
            if saver.progress.out_of_time(config.max_minutes):
                log(f"time budget of {config.max_minutes:g} minutes used up at step {step} "
                    f"of {config.max_steps}; stopping there")
                break
            # lr_schedule poly_time: the share of the budget used so far, read with the check above
            schedule_feed = {} if net.time_fraction is None else {
                net.time_fraction: saver.progress.seconds() / (60.0 * config.max_minutes)}
            t0 = time.perf_counter()
            images, labels = next(stream)
            t_data = time.perf_counter() - t0
            feed = {net.images: images, net.labels: labels, net.is_training: True, **schedule_feed}
            fetches = {"train": net.train_op, "loss": net.data_loss, "total": net.total_loss,
                       "acc": net.pixel_accuracy, "lr": net.learning_rate}
            next_step = step + 1
            if config.summary_every_steps and next_step % config.summary_every_steps == 0:
                fetches["summary"] = net.summary_op
            want_images = (config.image_summary_every_steps
                           and next_step % config.image_summary_every_steps == 0)
            if want_images:
                fetches["predictions"] = net.predictions
            try:
                out = session.run(fetches, feed)
            except tf.errors.InvalidArgumentError as err:  # e.g. the loss's label assertion
                raise FcnError(f"{config.data}: training step {next_step} failed: "
                               f"{_op_error_reason(err)}") from None
            if not (math.isfinite(out["loss"]) and math.isfinite(out["total"])):
                raise TrainingDiverged(
                    f"loss is {out['loss']} (total {out['total']}) at step {next_step}: training "
                    f"stopped without saving; {saver.last_good()}. Lower the learning rate "
                    "or check the data")
            step = next_step
            losses_here.append(float(out["loss"]))
            window = (window + [(time.perf_counter() - t0, t_data)])[-20:]
            if "summary" in out:
                writer.add_summary(out["summary"], step)
            if want_images:
                writer.add_summary(summaries.image_summary(
                    "train/input_truth_prediction", images[0], labels[0],
                    out["predictions"][0]), step)
            if config.log_every_steps and (step % config.log_every_steps == 0
                                           or step == start_step + 1 or step == config.max_steps):
                step_s = float(np.mean([w[0] for w in window]))
                data_s = float(np.mean([w[1] for w in window]))
                log(f"step {step}/{config.max_steps}  loss {out['loss']:.4f}  "
                    f"acc {out['acc']:.3f}  lr {out['lr']:.2e}  "
                    f"{config.batch_size / step_s:.1f} img/s  data {100 * data_s / step_s:.0f}%  "
                    + (f"eta {_format_eta(_seconds_left(config, step, step_s, saver.progress))}"
                       if step > start_step + 1 else "(warm-up step)"))
            if step == start_step + 1:
                window = []  # the first step builds and tunes kernels: not typical of the rest
            saver.maybe_save(step)
            if (config.eval_every_steps and val_indices and step % config.eval_every_steps == 0
                    and step < config.max_steps):
                _validate(config, session, net, writer, val_indices, class_names, step, stop, log,
                          clock=saver.progress)
    minutes_left = config.max_minutes - saver.progress.seconds() / 60.0
    if (net.time_fraction is not None and step >= config.max_steps
            and minutes_left > 0.05 * config.max_minutes):
        log(f"max_steps {config.max_steps} reached with {minutes_left:.1f} of the "
            f"{config.max_minutes:g} budget minutes left: the poly_time decay stopped early "
            "(pass a larger --max-steps to let it end with the budget)")
    return losses_here


def _validate(config, session, net, writer, val_indices, class_names, step, stop, log,
              train_dir=None, clock=None):
    """A validation pass; the final one (``train_dir`` given) also writes metrics.json and PNGs.

    ``clock`` (a progress.Progress) adds the result to the learning curve.
    """
    from fcn_tf1 import metrics, visualize
    pngs = []

    def keep_pngs(images, labels, predictions, names):
        if train_dir is None:
            return
        for image, label, prediction, name in zip(images, labels, predictions, names):
            if len(pngs) < config.num_prediction_pngs:
                pngs.append((name, visualize.triptych(image.astype(np.uint8), label, prediction)))

    result = evaluate.evaluate_in_session(
        session, net, batches.iterate_batches(config.data, val_indices, config.batch_size),
        config.num_classes, config.void_label, class_names, should_stop=stop, on_batch=keep_pngs)
    writer.add_summary(summaries.scalar_summary({
        "validation/pixel_accuracy": result["pixel_accuracy"],
        "validation/mean_accuracy": result["mean_accuracy"],
        "validation/mean_iou": result["mean_iou"],
        "validation/frequency_weighted_iou": result["frequency_weighted_iou"]}), step)
    writer.flush()
    log(f"validation at step {step} ({result['num_images']} images, "
        f"{result['seconds']:.1f} s):")
    log(metrics.format_table(result))
    if clock is not None and not stop():
        crop = "whole images" if config.crop_size is None else f"{config.crop_size} px crops"
        scale = "" if config.input_scale == 1.0 else f" at scale {config.input_scale:g}"
        loss = "" if config.class_weighting == "none" else f", {config.class_weighting} loss"
        if config.repeat_factor_threshold:
            loss += f", repeat factor sampling {config.repeat_factor_threshold:g}"
        if config.prior_correction:
            loss += f", prior correction {config.prior_correction:g}"
        clock.validated(step, result, title=f"{config.backbone} {config.variant} width "
                        f"{config.width}, batch {config.batch_size} {crop}{scale}, "
                        f"{config.optimizer} {config.learning_rate:g} {config.lr_schedule}"
                        f"{loss}, {len(val_indices)} validation images")
        log(f"learning curve ({len(clock.points)} points, {clock.seconds() / 60:.1f} training "
            f"minutes): {clock.train_dir / progress.CURVE_PNG}")
    if train_dir is not None:
        rundir.write_json(train_dir / "metrics.json",
                          dict(result, step=step, prior_correction=config.prior_correction))
        out_dir = train_dir / "predictions"
        try:
            out_dir.mkdir(exist_ok=True)
            for name, picture in pngs:
                # names come from the data file: keep only a base name inside out_dir
                visualize.save_png(out_dir / f"{pathlib.PurePath(name).name}.png", picture)
        except OSError as err:
            raise FcnError(f"{out_dir}: cannot write prediction PNGs ({err.strerror or err}); "
                           f"the checkpoint of step {step} is saved") from None
        if pngs:
            log(f"wrote {len(pngs)} prediction PNGs (input | truth | prediction) to {out_dir}")
    return result
