"""The training loop: a tf.compat.v1.Session that feeds batches, checkpoints, resumes exactly.

``train(config, train_dir)`` is the whole job behind ``python run_train.py``
and ``fcn-tf1 train``:

1. checks that the train dir is writable and takes its lock (one trainer per dir);
2. resumes when the dir already holds a run (its config.json wins; options that
   would change the graph or the data order are refused: run_setup.py);
3. builds placeholders -> inference() -> loss() -> optimizer (graph.py; one
   tower, or one per device of ``devices``), restores the latest checkpoint
   (global step, weights, optimizer slots, batch-norm statistics) and
   continues the data stream at batch ``global_step`` — batch k depends only
   on (seed, k), so a resumed run sees exactly the batches an uninterrupted
   one would;
4. runs the Session loop around steps.StepRunner with progress lines,
   summaries, periodic checkpoints (checkpoints.PeriodicSaver) and validation
   passes; stops cleanly on SIGINT/SIGTERM (saving first) and on a NaN/Inf
   loss or NaN/Inf weights (without saving, so the latest checkpoint stays
   good); a killed run resumes from its newest complete checkpoint;
5. saves at the end, evaluates on the validation split, writes metrics.json and
   prediction PNGs (validation.py).
"""
import collections
import time

import tensorflow as tf

from fcn_tf1 import batches, checkpoints, graph, rundir, run_clock, run_setup, signals, steps
from fcn_tf1 import prior_choice, summaries, validation, warm_start
from fcn_tf1.parallel import devices as devices_lib

tf1 = tf.compat.v1
# TensorBoard event files: TRAIN_DIR/train and TRAIN_DIR/validation (summaries.py)
Writers = collections.namedtuple("Writers", ["train", "validation"])


def train(requested, train_dir, explicit=(), log=print, devices=None, session_config=None):
    """Trains (or resumes) the run in ``train_dir``.

    Args:
      requested: RunConfig from the command line.
      train_dir: pathlib.Path of the run directory (created if missing).
      explicit: names of the config fields the user gave explicitly (checked
        against the saved config when resuming).
      log: a print-like function for progress lines.
      devices: None for one tower, or a parallel.devices.Devices (one tower
        per device, in-graph replication, `fcn-tf1 train --towers N`).
      session_config: a tf.compat.v1.ConfigProto for the Session (thread
        counts, GPU options), or None for parallel.devices.session_config();
        with ``devices``, theirs is used.

    Returns:
      dict with ``step`` (final global step), ``stopped_by`` (None, or the
      signal name), ``losses`` (data loss of every step run here, in order),
      ``validation`` (metrics dict of the final validation pass, or None) and
      ``config`` (the RunConfig used; with ``chooses_prior_correction``, holding the
      correction chosen at the end).
    """
    train_dir = rundir.ensure_writable(train_dir)
    with rundir.TrainDirLock(train_dir), signals.StopRequest() as stop:
        removed = rundir.remove_partial_files(train_dir)
        if removed:
            log(f"removed {len(removed)} partial file(s) an interrupted trainer was writing: "
                + ", ".join(removed))
        check = None if devices is None else (
            lambda config: graph.check_towers(config, len(devices.names)))
        run = run_setup.prepare_run(requested, train_dir, explicit, log, stop, check=check,
                                    where="" if devices is None else devices.describe())
        log(run_setup.describe(run))
        log(f"devices: {devices_lib.describe_visible()}")
        if devices is not None:
            session_config = devices.session_config
        if run.config.precision != "fp32":
            log(f"precision {run.config.precision}: oneDNN's automatic mixed precision rewrite "
                "(convolutions and their gradients in bfloat16, variables float32)")
        result = _run(run, devices, devices_lib.apply_precision(
            session_config or devices_lib.session_config(), run.config.precision))
    if stop():
        log(f"stopped by {stop.signal_name} at step {result['step']}; checkpoint saved, "
            "run the same command again to resume")
    return dict(result, stopped_by=stop.signal_name)


def _run(run, devices, session_config):
    config = run.config
    with tf.Graph().as_default():
        net = (graph.build_training_graph(config) if devices is None else
               graph.build_training_graph(config, devices.names, devices.variables_device))
        with tf1.Session(config=session_config) as session:
            saver = checkpoints.PeriodicSaver(config, session, run.train_dir, run.log)
            best = checkpoints.BestKeeper(config, session, run.train_dir, run.log)
            checkpoint = checkpoints.latest(run.train_dir)
            session.run(tf1.global_variables_initializer())
            if checkpoint:
                checkpoints.restore(saver.saver, session, checkpoint)
                if not checkpoints.state_file_agrees(run.train_dir, checkpoint):
                    run.log("the checkpoint state file is missing or unreadable: using the "
                            "newest complete checkpoint")
                run.log(f"restored {checkpoint}")
                if config.init_from:
                    run.log(f"--init-from {config.init_from} ignored: the run resumes from its "
                            "own checkpoint")
            elif config.init_from:
                source = warm_start.source_checkpoint(config.init_from)
                planned = warm_start.plan(source, tf1.global_variables())
                warm_start.initialise(session, source, planned)
                run.log(warm_start.describe(source, planned))
            elif config.vgg16_weights:
                from fcn_tf1 import vgg16_weights
                vgg16_weights.load_vgg16_weights(session, config.vgg16_weights)
                run.log(f"initialised the VGG16 backbone from {config.vgg16_weights}")
            step = int(session.run(net.global_step))
            saver.last_step = step if checkpoint else None
            saver.clock = run_clock.RunClock(run.train_dir, step)
            writers = Writers(
                tf1.summary.FileWriter(str(run.train_dir / summaries.TRAIN_LOGDIR),
                                       session.graph if not checkpoint else None),
                tf1.summary.FileWriter(str(run.train_dir / summaries.VALIDATION_LOGDIR)))
            try:
                losses_here = _loop(run, session, net, saver, best, writers, step)
                step = int(session.run(net.global_step))
                saver.save(step)
                final, extra = None, None
                if not run.stop() and config.chooses_prior_correction and run.val_indices:
                    run, extra = prior_choice.choose_for_run(session, net, run)
                if not run.stop():
                    final = validation.final_pass(session, net, run, step, writers.validation,
                                                  saver.clock, extra)
                    if final is not None:
                        best.consider(step, final)
            finally:
                writers.train.close()
                writers.validation.close()
    # the config: with chooses_prior_correction, the correction the run chose
    return {"step": step, "losses": losses_here, "validation": final, "config": run.config}


def _seconds_left(config, clock, step, step_s):
    """Estimated seconds to the end of training: max_steps or the budget, whichever comes first."""
    seconds = step_s * (config.max_steps - step)
    if config.max_minutes:
        seconds = min(seconds, max(0.0, 60.0 * config.max_minutes - clock.seconds()))
    return seconds


def _loop(run, session, net, saver, best, writers, step):
    """Runs steps ``step`` .. ``config.max_steps - 1``; returns their data losses."""
    config, clock, log = run.config, saver.clock, run.log
    if step >= config.max_steps:
        log(f"run already at step {step} >= max_steps {config.max_steps}; nothing to train "
            "(pass a larger --max-steps to continue)")
        return []
    stream = batches.BatchStream(config.data, run.train_indices, config.batch_size,
                                 seed=config.seed, crop_size=config.crop_size, flip=config.flip,
                                 scale_jitter=config.scale_jitter,
                                 repeat_factor_threshold=config.repeat_factor_threshold,
                                 start_batch=step)
    if stream.repeat_factors is not None:
        factors = stream.repeat_factors
        log(f"repeat factor sampling (threshold {config.repeat_factor_threshold:g}): "
            f"{(factors > 1).mean():.0%} of the {len(factors)} training images oversampled, "
            f"by up to {factors.max():.1f}x (mean factor {factors.mean():.2f})")
    runner = steps.StepRunner(run, net, writers.train, last_good=saver.last_good,
                              eta=lambda at, step_s: _seconds_left(config, clock, at, step_s))
    with stream:
        while step < config.max_steps and not run.stop():
            if clock.out_of_time(config.max_minutes):
                log(f"time budget of {config.max_minutes:g} minutes used up at step {step} "
                    f"of {config.max_steps}; stopping there")
                break
            # lr_schedule poly_time: the share of the budget used so far, read with the check above
            feed = {} if net.time_fraction is None else {
                net.time_fraction: clock.seconds() / (60.0 * config.max_minutes)}
            started = time.perf_counter()
            images, labels = next(stream)
            data_seconds = time.perf_counter() - started
            step += 1
            every = config.summary_every_steps
            out = runner.step(session, images, labels, data_seconds, started, step=step,
                              feed=feed, summary=bool(every and step % every == 0))
            if "summary" in out:
                writers.train.add_summary(out["summary"], step)
            saver.maybe_save(step)
            if (config.eval_every_steps and run.val_indices
                    and step % config.eval_every_steps == 0 and step < config.max_steps):
                result = validation.periodic_pass(session, net, run, step, writers.validation,
                                                  clock)
                if result is not None:
                    best.consider(step, result)
    minutes_left = config.max_minutes - clock.seconds() / 60.0
    if (net.time_fraction is not None and step >= config.max_steps
            and minutes_left > 0.05 * config.max_minutes):
        log(f"max_steps {config.max_steps} reached with {minutes_left:.1f} of the "
            f"{config.max_minutes:g} budget minutes left: the poly_time decay stopped early "
            "(pass a larger --max-steps to let it end with the budget)")
    return runner.losses
