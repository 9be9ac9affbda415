"""Between-graph replicated training on TensorFlow's own gRPC runtime, the TF1 way.

API (``task`` is a ``cluster.ClusterTask``, from TF_CONFIG or ``--cluster FILE``)::

    run_task(requested, train_dir, task, explicit=(), sync=True)   the task of this process
    serve(task)                                      a ps task: serve until SIGINT/SIGTERM
    train_replica(requested, train_dir, task, ...)   a chief or worker task: train
    session_args(config, train_dir, task, ...)       MonitoredTrainingSession's arguments

Every process runs ``tf.distribute.Server`` for its task. ``ps`` tasks only
hold variables. Each ``chief``/``worker`` task (a *replica*) builds the whole
training graph itself under ``tf.compat.v1.train.replica_device_setter``:
variables go to the ps tasks round-robin (their names do not change, so the
checkpoints are those of single-process training), every other op stays on the
replica. Replica ``r`` of ``n`` (the chief is 0; without a ``chief`` job
``worker:0`` is the chief) trains on ``train_indices[r::n]``, so no two
replicas read the same image in an epoch.

Synchronous by default: ``tf.compat.v1.train.SyncReplicasOptimizer`` averages
the gradients of ``n`` replica steps into one update, so the global step
advances once per ``n`` batches (the effective batch is ``n * batch_size``)
and ``max_steps`` counts these updates; each replica runs about ``max_steps``
steps. ``sync=False`` applies every replica's gradients on their own (the
global step then advances once per replica step, so each of ``n`` replicas
runs about ``max_steps / n`` steps).

The chief alone takes the train-dir lock and writes ``config.json``,
checkpoints (``tf.compat.v1.train.MonitoredTrainingSession``: restores the
latest one when the chief restarts), summaries and, at the end, a validation
pass from the final checkpoint through the single-process graph
(``load_run.open_trained``, as ``fcn-tf1 eval`` does). The chief first
rewrites a missing or damaged ``checkpoint`` state file from the newest
complete checkpoint (checkpoints.repair_state_file), so such a run resumes
instead of starting over from step 0. A worker may be
restarted at any time and rejoins. Distributed runs are not bit-exact: the
order in which replica gradients arrive and the shared dropout counter (each
replica advances it) depend on timing.
"""
import contextlib
import logging
import pathlib
import sys
import time

import tensorflow as tf

from fcn_tf1 import batches, checkpoints, graph, load_run, rundir, run_setup, signals, steps
from fcn_tf1 import config as config_lib
from fcn_tf1 import summaries, validation, warm_start
from fcn_tf1.errors import ConfigError, FcnError
from fcn_tf1.parallel import cluster as cluster_lib

tf1 = tf.compat.v1
# A step that waits longer than this for its peers is cancelled and retried, so that a
# stop request (SIGTERM) or the end of training is noticed: signal handlers cannot run
# while session.run blocks in C++.
MIN_STEP_TIMEOUT_SECS = 10.0
STEP_TIMEOUT_FACTOR = 20  # ... or this many typical step times, whichever is longer
STOP_GRACE_SECS = 3


def _start_server(task):
    """This task's ``tf.distribute.Server``, after the warning that it has no authentication.

    TensorFlow binds it to every interface (cluster.exposure_warning says why this
    cannot be changed); cluster.resolve_task refuses non-loopback clusters unless asked.
    """
    print(f"fcn-tf1: warning: {cluster_lib.exposure_warning(task)}", file=sys.stderr, flush=True)
    return tf.distribute.Server(task.cluster_spec(), job_name=task.job_name,
                                task_index=task.task_index, start=True)


def serve(task, log=print, stop=None):
    """A ps task: starts its server and serves the variables until SIGINT/SIGTERM."""
    server = _start_server(task)
    log(f"{task.job_name}:{task.task_index} serving variables at {task.address} "
        f"({server.target}); stop with SIGTERM")
    # Wait in Python, not server.join(): join() blocks in C++ where no signal handler runs.
    with contextlib.ExitStack() as stack:
        stop = stop or stack.enter_context(signals.StopRequest())
        while not stop():
            time.sleep(0.2)
    log(f"{task.job_name}:{task.task_index} stopped by {getattr(stop, 'signal_name', 'request')}")
    return {"stopped_by": getattr(stop, "signal_name", None)}


def run_task(requested, train_dir, task, explicit=(), sync=True, log=print):
    """Runs this process's task: ps serves, chief and workers train (see the module docstring)."""
    if task.job_name == "ps":
        return serve(task, log)
    return train_replica(requested, train_dir, task, explicit, sync, log)


def train_replica(requested, train_dir, task, explicit=(), sync=True, log=print):
    """A chief or worker task: between-graph replicated training.

    Returns:
      dict with ``step`` (global step at the end), ``local_steps`` (steps this
      replica ran), ``losses`` (their data losses), ``seconds`` (training
      time), ``stopped_by``, ``validation`` (chief: metrics of the final
      validation pass, else None) and ``config``.
    """
    train_dir = pathlib.Path(train_dir)
    with contextlib.ExitStack() as stack:
        if task.is_chief:
            rundir.ensure_writable(train_dir)
            stack.enter_context(rundir.TrainDirLock(train_dir))
        stop = stack.enter_context(signals.StopRequest())

        def check(config):
            if config.max_minutes:
                raise ConfigError(
                    f"--max-minutes {config.max_minutes:g}: not supported in a cluster (the "
                    "tasks share no clock); use --max-steps (and a step schedule instead of "
                    "poly_time)")
            unsupported = [f"{name} {value:g}" for name, value in (
                ("--ema-decay", config.ema_decay),
                ("--prior-correction-floor", config.prior_correction_floor)) if value]
            if config.chooses_prior_correction and not config.prior_correction_floor:
                unsupported.append(f"--prior-correction-choice {config.prior_correction_choice}")
            if unsupported:
                raise ConfigError(f"{', '.join(unsupported)}: not supported in a cluster (the "
                                  "single-process trainer has it)")

        # a worker may not see the chief's train dir: it trains with the options it was given
        run = run_setup.prepare_run(
            requested, train_dir, explicit, log, stop, check=check,
            resolve=task.is_chief or (train_dir / config_lib.CONFIG_NAME).is_file(),
            write_config=task.is_chief)
        config = run.config
        shard = run.train_indices[task.replica_index::task.num_replicas]
        if not shard:
            raise FcnError(f"{config.data}: {len(run.train_indices)} training images cannot be "
                           f"sharded over {task.num_replicas} replicas")
        action = "resuming" if run.resuming else "starting"
        log(f"{task.job_name}:{task.task_index} (replica {task.replica_index} of "
            f"{task.num_replicas}, {'sync' if sync else 'async'}) "
            f"{action if task.is_chief else 'joining'} run in {train_dir}: {len(shard)} of "
            f"{len(run.train_indices)} train images, ps {', '.join(task.cluster['ps'])}")
        result = _train(run, task, shard, sync)
        result["validation"] = None
        if task.is_chief and not stop():
            result["validation"] = _final_validation(run)
    if stop():
        where = ("before the first step" if result["step"] is None
                 else f"at global step {result['step']}")
        log(f"stopped by {stop.signal_name} {where}"
            + ("; checkpoint saved, run the same command again to resume" if task.is_chief
               else "; restart this task to rejoin"))
    result.update(stopped_by=stop.signal_name, config=config)
    return result


class _SyncReplicasOptimizer(tf1.train.SyncReplicasOptimizer):
    """SyncReplicasOptimizer whose chief queue runner can stop and start again.

    The stock runner closes the token queue when the chief stops. That queue
    lives on a ps task and is shared by name, so it stays closed: a restarted
    chief could not enqueue tokens again and the workers' steps would fail.
    This runner leaves the queue open (the workers then wait for the chief to
    come back), and ends quietly when closing the session cancels the wait for
    gradients that will not come (the stock one prints a traceback).
    """

    def get_chief_queue_runner(self):
        if not hasattr(self, "_restartable_runner"):
            runner = super().get_chief_queue_runner()
            self._restartable_runner = tf1.train.QueueRunner(
                runner.queue, runner.enqueue_ops, close_op=tf.no_op(), cancel_op=tf.no_op(),
                queue_closed_exception_types=(tf.errors.OutOfRangeError, tf.errors.CancelledError))
        return self._restartable_runner


@contextlib.contextmanager
def _known_deprecations_quiet():
    """SyncReplicasOptimizer and QueueRunner are deprecated in TF2; choosing them is the point."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _ReleasePeersHook(tf1.train.SessionRunHook):
    """At the chief's end, one more sync token per replica.

    A replica that pushed its gradient after the last update waits for a token
    that no further update will produce; this token lets it finish its step,
    see the final global step and stop. It runs after the final checkpoint
    (hooks end in order), so an update the tokens allow never reaches it.
    """

    def __init__(self, sync_optimizer, num_replicas):
        self._sync_optimizer, self._num_replicas = sync_optimizer, num_replicas

    def begin(self):
        self._release = self._sync_optimizer.get_init_tokens_op(self._num_replicas)

    def end(self, session):
        session.run(self._release)


def session_args(config, train_dir, task, sync_optimizer, master):
    """Keyword arguments of MonitoredTrainingSession for this task."""
    hooks = [tf1.train.StopAtStepHook(last_step=config.max_steps)]
    if sync_optimizer is not None:
        hooks.append(sync_optimizer.make_session_run_hook(task.is_chief))
        if task.is_chief:
            hooks.append(_ReleasePeersHook(sync_optimizer, task.num_replicas))
    # CheckpointSaverHook takes steps or seconds, not both; and the run must end
    # with a checkpoint even when periodic saving is off.
    save_steps = config.save_every_steps or (None if config.save_every_secs else config.max_steps)

    def initialise(scaffold, session):  # only on a fresh start: a checkpoint wins
        if config.init_from:
            source = warm_start.source_checkpoint(config.init_from)
            planned = warm_start.plan(source, tf1.global_variables())
            warm_start.initialise(session, source, planned)
            print(warm_start.describe(source, planned), flush=True)
        else:
            from fcn_tf1 import vgg16_weights
            vgg16_weights.load_vgg16_weights(session, config.vgg16_weights)
    scaffold = tf1.train.Scaffold(
        saver=tf1.train.Saver(sharded=True, max_to_keep=config.max_to_keep,
                              save_relative_paths=True),  # a run dir can be moved
        init_fn=initialise if (config.init_from or config.vgg16_weights) else None)
    if task.is_chief:
        # The chief's own saver hook instead of MonitoredTrainingSession's: that one takes no
        # listeners, and NaN weights must never be saved (checkpoints.FiniteWeightsGuard).
        # First in the list, so its final save comes before _ReleasePeersHook.end.
        hooks.insert(0, tf1.train.CheckpointSaverHook(
            str(train_dir), save_steps=save_steps,
            save_secs=None if save_steps else config.save_every_secs, scaffold=scaffold,
            listeners=[checkpoints.FiniteWeightsGuard(train_dir)], save_graph_def=False))
    return dict(
        master=master, is_chief=task.is_chief, scaffold=scaffold, hooks=hooks,
        checkpoint_dir=str(train_dir) if task.is_chief else None,
        # the training curves in TRAIN_DIR/train, beside validation's (summaries.py)
        summary_dir=str(train_dir / summaries.TRAIN_LOGDIR) if task.is_chief else None,
        save_checkpoint_steps=None, save_checkpoint_secs=None,  # the hook above saves
        save_summaries_steps=config.summary_every_steps or None, save_summaries_secs=None,
        log_step_count_steps=config.summary_every_steps or None,
        # only ps and this task: a replica never waits for, or depends on, another one
        config=tf1.ConfigProto(device_filters=["/job:ps", task.device]),
        # the chief's sync queue runner waits for gradients that may never come: closing
        # the session must not wait long for it
        stop_grace_period_secs=STOP_GRACE_SECS, save_graph_def=False)


def _train(run, task, shard, sync):
    config, train_dir, stop, log = run.config, run.train_dir, run.stop, run.log
    server = _start_server(task)
    holder = []

    def wrap(optimizer):
        holder.append(_SyncReplicasOptimizer(
            optimizer, replicas_to_aggregate=task.num_replicas,
            total_num_replicas=task.num_replicas))
        return holder[-1]

    with tf.Graph().as_default():
        with tf1.device(tf1.train.replica_device_setter(cluster=task.cluster_spec(),
                                                        worker_device=task.device)):
            with _known_deprecations_quiet():
                net = graph.build_training_graph(config, wrap_optimizer=wrap if sync else None)
                if sync and task.is_chief:
                    holder[0].get_chief_queue_runner()  # built (and cached) here, quietly
        with tf1.device("/job:ps/task:0"):
            # Lives on ps 0 across restarts of the replicas: a barrier before the first step
            ready = tf1.FIFOQueue(-1, tf.int32, shapes=[], shared_name="fcn_replicas_ready",
                                  name="replicas_ready")
            arrive, arrived = ready.enqueue(task.replica_index), ready.size()
        if task.is_chief:  # MonitoredTrainingSession reads only the state file: without it,
            checkpoints.repair_state_file(train_dir)  # it would start over from step 0
        monitored_args = session_args(config, train_dir, task, holder[0] if sync else None,
                                      server.target)
        if not task.is_chief:  # MonitoredTrainingSession would wait too, polling every 30 s
            uninitialized = tf1.report_uninitialized_variables(tf1.global_variables())
            with tf1.Session(server.target, config=monitored_args["config"]) as probe:
                _wait_until(lambda: not len(probe.run(uninitialized)),
                            "the chief to initialise the model", stop, log)
            if stop():
                return {"step": None, "local_steps": 0, "losses": [], "seconds": 0.0}
        with tf1.train.MonitoredTrainingSession(**monitored_args) as session:
            # Every replica connects before the first step; otherwise the first ones to start
            # run all the steps (the sync optimizer takes any n gradients, not one per replica).
            _raw_run(session, arrive)
            _wait_until(lambda: _raw_run(session, arrived) >= task.num_replicas,
                        "the other replicas to connect", stop, log)
            global_step = int(_raw_run(session, net.global_step))
            writer = (tf1.summary.FileWriterCache.get(str(train_dir / summaries.TRAIN_LOGDIR))
                      if task.is_chief and config.image_summary_every_steps else None)
            # Sync: every replica has run about global_step batches; async: about 1/n of them.
            start = global_step if sync else global_step // task.num_replicas
            with batches.BatchStream(config.data, shard, config.batch_size,
                                     seed=config.seed * task.num_replicas + task.replica_index,
                                     crop_size=config.crop_size, flip=config.flip,
                                     scale_jitter=config.scale_jitter,
                                     repeat_factor_threshold=config.repeat_factor_threshold,
                                     start_batch=start) as stream:
                result = _loop(run, session, net, stream, writer, task)
    return result


def _wait_until(done, what, stop, log):
    """Polls ``done()`` until it holds or a stop is requested; says what it waits for every 10 s."""
    started = last_log = time.monotonic()
    while not done() and not stop():
        if time.monotonic() - last_log >= 10:
            log(f"waiting for {what} ({time.monotonic() - started:.0f} s)")
            last_log = time.monotonic()
        time.sleep(0.2)


def _raw_run(session, fetches):
    """``fetches`` from the monitored session's own Session, without running the hooks."""
    return session.run_step_fn(lambda step_context: step_context.session.run(fetches))


def _loop(run, session, net, stream, writer, task):
    """Steps until the StopAtStepHook (global step >= max_steps) or a stop request."""
    config, log = run.config, run.log
    runner = steps.StepRunner(
        run, net, writer, count_local=True, where=f" on {task.job_name}:{task.task_index}",
        last_good=lambda: "the chief's latest checkpoint is the last good one")
    step, waiting_since = 0, None
    started = time.perf_counter()
    while not session.should_stop() and not run.stop():
        t0 = time.perf_counter()
        images, labels = next(stream)
        data_seconds = time.perf_counter() - t0
        timeout = max(MIN_STEP_TIMEOUT_SECS,
                      STEP_TIMEOUT_FACTOR * runner.typical_step_seconds())
        try:
            out = runner.step(session, images, labels, data_seconds, t0,
                              options=tf1.RunOptions(timeout_in_ms=int(1000 * timeout)))
        except tf.errors.DeadlineExceededError:
            # Waiting for peers (sync) or for the chief to come back; the gradient already
            # pushed stays valid, the retry pushes one more from a fresh batch.
            step = int(_raw_run(session, net.global_step))
            if step >= config.max_steps:
                break
            if waiting_since is None:
                waiting_since = time.perf_counter()
            log(f"global step {step}: waiting for the other replicas "
                f"({time.perf_counter() - waiting_since:.0f} s)")
            continue
        waiting_since = None
        step = out["step"]
    seconds = time.perf_counter() - started
    if not run.stop():
        step = max(step, int(_raw_run(session, net.global_step)))
    local = runner.local_steps
    log(f"{task.job_name}:{task.task_index} done: {local} local steps, global step {step}, "
        f"{seconds:.1f} s, {local * config.batch_size / max(seconds, 1e-9):.1f} img/s "
        "on this replica")
    return {"step": step, "local_steps": local, "losses": runner.losses, "seconds": seconds}


def _final_validation(run):
    """The chief's last validation pass, from the final checkpoint in the single-process graph;
    its weights become the best checkpoint when they are (checkpoints.BestKeeper)."""
    with load_run.open_trained(run.train_dir) as (_, session, net, checkpoint):
        writer = tf1.summary.FileWriterCache.get(str(run.train_dir / summaries.VALIDATION_LOGDIR))
        step = checkpoints.step_of(checkpoint)
        result = validation.final_pass(session, net, run, step, writer)
        if result is not None:
            checkpoints.BestKeeper(run.config, session, run.train_dir, run.log).consider(
                step, result)
        return result
