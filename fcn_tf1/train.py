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
   a NaN/Inf loss (without saving, so the latest checkpoint stays good);
5. saves at the end, evaluates on the validation split, writes metrics.json and
   prediction PNGs.
"""
import math
import pathlib
import signal
import time

import numpy as np
import tensorflow as tf

from fcn_tf1 import config as config_lib
from fcn_tf1 import batches, evaluate, graph, h5data, losses, rundir, summaries
from fcn_tf1.errors import ConfigError, FcnError

tf1 = tf.compat.v1
CHECKPOINT_PREFIX = "model.ckpt"


class TrainingDiverged(FcnError):
    """The loss became NaN or Inf; nothing was saved after the last good checkpoint."""
    exit_code = 3


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self):
        return self.signal_name is not None


def resolve_config(requested, train_dir, explicit=(), log=print):
    """The config this run uses: the saved one when resuming, else ``requested``."""
    has_config = (train_dir / config_lib.CONFIG_NAME).is_file()
    checkpoint = tf1.train.latest_checkpoint(str(train_dir))
    if checkpoint and not has_config:
        raise ConfigError(f"{train_dir}: holds checkpoints but no config.json; "
                          "cannot tell how to rebuild the graph")
    if not has_config:
        return requested, False
    saved = config_lib.load(train_dir)
    return config_lib.merge_for_resume(saved, requested, set(explicit), train_dir), True


def _split(dataset, val_fraction):
    val = evaluate.validation_indices(dataset, val_fraction)
    return sorted(set(range(len(dataset))) - set(val)), val


def _with_class_weights(config, dataset, train_indices, log):
    if config.class_weighting != "median_frequency" or config.class_weights is not None:
        return config
    counts, presence_pixels = dataset.label_statistics(train_indices)
    weights = losses.median_frequency_weights(counts, presence_pixels)
    log("class weights (median frequency): " + " ".join(f"{w:.2f}" for w in weights))
    return config.replace(class_weights=tuple(float(w) for w in weights))


def _restore(saver, session, checkpoint):
    try:
        saver.restore(session, checkpoint)
    except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as err:
        first_line = str(err.message).strip().splitlines()[0]
        raise ConfigError(f"{checkpoint}: checkpoint does not match config.json "
                          f"({first_line[:200]})") from None


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class _Saver:
    """Periodic checkpoints (every N steps and/or every M seconds) that never save NaN weights."""

    def __init__(self, config, session, train_dir, log):
        self.saver = tf1.train.Saver(max_to_keep=config.max_to_keep)
        self.session = session
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
        try:
            path = self.saver.save(self.session, self.prefix, global_step=step)
        except (tf.errors.OpError, OSError) as err:
            reason = getattr(err, "message", None) or str(err)
            raise FcnError(f"{self.prefix}-{step}: could not write checkpoint "
                           f"({reason.strip().splitlines()[0][:200]}); "
                           "earlier checkpoints are kept") from None
        self.last_step = step
        self.last_time = time.monotonic()
        self.log(f"saved {path}")


def train(requested, train_dir, explicit=(), log=print):
    """Trains (or resumes) the run in ``train_dir``.

    Args:
      requested: RunConfig from the command line.
      train_dir: pathlib.Path of the run directory (created if missing).
      explicit: names of the config fields the user gave explicitly (checked
        against the saved config when resuming).
      log: a print-like function for progress lines.

    Returns:
      dict with ``step`` (final global step), ``stopped_by`` (None, or the
      signal name), ``losses`` (data loss of every step run here, in order),
      ``validation`` (metrics dict of the final validation pass, or None) and
      ``config`` (the RunConfig used).
    """
    train_dir = rundir.ensure_writable(train_dir)
    with rundir.TrainDirLock(train_dir), _StopRequest() as stop:
        config, resuming = resolve_config(requested, train_dir, explicit, log)
        with h5data.H5Dataset(config.data) as dataset:
            class_names = list(dataset.class_names)
            train_indices, val_indices = _split(dataset, config.val_fraction)
            if not train_indices:
                raise FcnError(f"{config.data}: no training images after the validation split")
            config = _with_class_weights(config, dataset, train_indices, log)
        config_lib.save(config, train_dir)
        log(f"{'resuming' if resuming else 'starting'} run in {train_dir}: "
            f"{config.backbone} {config.variant} width {config.width}, "
            f"{len(train_indices)} train / {len(val_indices)} val images from {config.data}")
        return _run(config, train_dir, class_names, train_indices, val_indices, stop, log)


def _run(config, train_dir, class_names, train_indices, val_indices, stop, log):
    with tf.Graph().as_default():
        net = graph.build_training_graph(config)
        session = tf1.Session()
        with session:
            saver = _Saver(config, session, train_dir, log)
            checkpoint = tf1.train.latest_checkpoint(str(train_dir))
            session.run(tf1.global_variables_initializer())
            if checkpoint:
                _restore(saver.saver, session, checkpoint)
                log(f"restored {checkpoint}")
            elif config.vgg16_weights:
                from fcn_tf1 import vgg16_weights
                vgg16_weights.load_vgg16_weights(session, config.vgg16_weights)
                log(f"initialised the VGG16 backbone from {config.vgg16_weights}")
            step = int(session.run(net.global_step))
            saver.last_step = step if checkpoint else None
            writer = tf1.summary.FileWriter(str(train_dir), session.graph if not checkpoint else None)
            try:
                losses_here = _loop(config, session, net, saver, writer, train_indices,
                                    val_indices, class_names, step, stop, log)
                step = int(session.run(net.global_step))
                saver.save(step)
                validation = None
                if val_indices and not stop():
                    validation = _validate(config, session, net, writer, val_indices, class_names,
                                           step, stop, log, train_dir=train_dir)
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
                                scale_jitter=config.scale_jitter, start_batch=step)
    losses_here = []
    window = []  # (step seconds, data seconds) of recent steps
    start_step = step
    with stream:
        while step < config.max_steps and not stop():
            t0 = time.perf_counter()
            images, labels = next(stream)
            t_data = time.perf_counter() - t0
            feed = {net.images: images, net.labels: labels, net.is_training: True}
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
                first_line = str(err.message).strip().splitlines()[0]
                raise FcnError(f"{config.data}: training step {next_step} failed: "
                               f"{first_line[:300]}") from None
            if not (math.isfinite(out["loss"]) and math.isfinite(out["total"])):
                raise TrainingDiverged(
                    f"loss is {out['loss']} (total {out['total']}) at step {next_step}: training "
                    f"stopped without saving; the latest checkpoint "
                    f"(step {saver.last_step}) is the last good one. Lower the learning rate "
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
                    + (f"eta {_format_eta(step_s * (config.max_steps - step))}"
                       if step > start_step + 1 else "(warm-up step)"))
            if step == start_step + 1:
                window = []  # the first step builds and tunes kernels: not typical of the rest
            saver.maybe_save(step)
            if (config.eval_every_steps and val_indices and step % config.eval_every_steps == 0
                    and step < config.max_steps):
                _validate(config, session, net, writer, val_indices, class_names, step, stop, log)
    return losses_here


def _validate(config, session, net, writer, val_indices, class_names, step, stop, log,
              train_dir=None):
    """A validation pass; the final one (``train_dir`` given) also writes metrics.json and PNGs."""
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
    if train_dir is not None:
        rundir.write_json(train_dir / "metrics.json", dict(result, step=step))
        out_dir = train_dir / "predictions"
        out_dir.mkdir(exist_ok=True)
        for name, picture in pngs:
            # names come from the data file: keep only a base name inside out_dir
            visualize.save_png(out_dir / f"{pathlib.PurePath(name).name}.png", picture)
        if pngs:
            log(f"wrote {len(pngs)} prediction PNGs (input | truth | prediction) to {out_dir}")
    return result
