"""Distributed training: cluster parsing, the local launcher, a real 1 ps + 2 worker cluster
on 127.0.0.1, and the in-graph multi-tower graph.

The cluster test runs real processes on TensorFlow's gRPC runtime exactly as a
user does (``fcn-tf1 cluster-local``), with a time limit on every wait, and
checks that nothing is left behind (processes, ports).
"""
import json
import os
import pathlib
import re
import signal
import socket
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from fcn_tf1 import cli, graph, h5data, losses, model, train_args
from fcn_tf1.parallel import cluster, cluster_local, devices, distributed
from fcn_tf1 import config as config_lib
from fcn_tf1.errors import ConfigError

tf1 = tf.compat.v1
TINY = ["--width", "4", "--crop-size", "64", "--batch-size", "2", "--num-prediction-pngs", "1"]
CLUSTER = {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"], "ps": ["h3:2222"]}
LOOPBACK = {"worker": ["127.0.0.1:2222", "[::1]:2223"], "ps": ["localhost:2224"]}


def test_tasks_from_tf_config_and_cluster_file(tmp_path):
    task = cluster.task_from_tf_config(
        json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 1}}))
    assert task.replicas == [("chief", 0), ("worker", 0), ("worker", 1)]
    assert (task.replica_index, task.num_replicas, task.is_chief) == (2, 3, False)
    assert task.device == "/job:worker/task:1" and task.address == "h2:2222"
    chief = cluster.task_from_tf_config(json.dumps({"cluster": CLUSTER,
                                                        "task": {"type": "chief"}}))
    assert chief.is_chief and chief.replica_index == 0
    # without a chief job, worker 0 is the chief (the TF1 convention)
    no_chief = {"worker": ["a:1", "b:2"], "ps": ["c:3"]}
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"cluster": no_chief}))
    assert cluster.task_from_file(path, "worker", 0).is_chief
    ps = cluster.resolve_task(path, "ps", None, environ={}, allow_remote=True)
    assert ps.job_name == "ps" and ps.replica_index is None
    # --cluster wins over TF_CONFIG; TF_CONFIG when asked for; neither: single process
    env = {"TF_CONFIG": json.dumps({"cluster": CLUSTER, "task": {"type": "ps", "index": 0}})}
    assert cluster.resolve_task(path, "worker", 1, environ=env, allow_remote=True).address == "b:2"
    assert cluster.resolve_task(environ=env, use_tf_config=True,
                                allow_remote=True).job_name == "ps"
    assert cluster.resolve_task(environ={}) is None


def test_tf_config_alone_does_not_join_a_cluster():
    """A TF_CONFIG set by a platform is ignored, with a warning, unless use_tf_config."""
    env = {"TF_CONFIG": json.dumps({"cluster": LOOPBACK, "task": {"type": "ps", "index": 0}})}
    warnings = []
    assert cluster.resolve_task(environ=env, warn=warnings.append) is None
    assert len(warnings) == 1 and "TF_CONFIG is set but ignored" in warnings[0]
    assert "--use-tf-config" in warnings[0] and "no authentication" in warnings[0]
    assert cluster.resolve_task(environ=env, use_tf_config=True).job_name == "ps"
    with pytest.raises(ConfigError, match="need --cluster FILE"):
        cluster.resolve_task(None, "worker", 0, environ=env, warn=warnings.append)


def test_remote_addresses_need_an_explicit_choice(tmp_path):
    """The servers cannot be bound to one address: a cluster beyond loopback is refused
    unless allow_remote (a private network the user vouches for)."""
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({"cluster": CLUSTER}))
    with pytest.raises(ConfigError, match=r"h0:2222 is not a loopback address.*"
                                          r"--allow-remote-cluster"):
        cluster.resolve_task(path, "worker", 0, environ={})
    assert cluster.resolve_task(path, "worker", 0, environ={}, allow_remote=True).address == \
        "h1:2222"
    mixed = {"worker": ["127.0.0.1:1", "10.0.0.2:2"], "ps": ["[::1]:3"]}
    assert cluster.remote_addresses(mixed) == ["10.0.0.2:2"]
    assert cluster.remote_addresses(LOOPBACK) == []
    path.write_text(json.dumps({"cluster": LOOPBACK}))
    task = cluster.resolve_task(path, "ps", 0, environ={})
    warning = cluster.exposure_warning(task)
    assert "ps:0" in warning and "port 2224" in warning and "NO authentication" in warning


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker"}}', "'cluster' entry"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}', "at least one 'ps'"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["a:1"]}, "task": {"type": "ps"}}', "appears twice"),
    ('{"cluster": {"worker": ["a"], "ps": ["b:2"]}, "task": {"type": "ps"}}', "host:port"),
    ('{"cluster": {"evaluator": ["a:1"], "ps": ["b:2"]}}', "unsupported jobs evaluator"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 1}}',
     "task index 1 out of range"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}}', "no task type"),
])
def test_bad_cluster_descriptions_are_one_line_errors(tf_config, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cluster.resolve_task(environ={"TF_CONFIG": tf_config}, use_tf_config=True,
                             allow_remote=True)


def test_cluster_local_passes_its_config_to_the_tasks(tmp_path):
    """What cluster-local builds once is what every task trains: config and explicit fields."""
    parser = cli.build_parser()
    args = parser.parse_args(["cluster-local", "--workers", "3", "--width", "4", "--no-flip",
                              "--scale-jitter", "0.75,1.25", "--async", "--lr", "0.02"])
    config, explicit = train_args.config_from_args(args)
    train_dir = train_args.train_dir_of(args)
    path = tmp_path / "run_config.json"
    train_args.write_run_config(path, config, explicit)
    task_args = parser.parse_args(["train", "--run-config", str(path), "--train-dir",
                                   str(train_dir), "--async"])
    again, again_explicit = train_args.config_from_args(task_args)
    assert again == config and again_explicit == explicit
    assert train_args.train_dir_of(task_args) == train_dir
    assert (again.width, again.flip, again.scale_jitter, again.learning_rate) == (
        4, False, (0.75, 1.25), 0.02)
    assert {"width", "flip", "scale_jitter", "learning_rate"} <= explicit
    assert "workers" not in explicit and "max_steps" not in explicit
    # a task given other training options beside the file would train another config
    with pytest.raises(ConfigError, match="--run-config: .*drop --width"):
        train_args.config_from_args(parser.parse_args(
            ["train", "--run-config", str(path), "--width", "8"]))


# A stand-in task for the launcher tests: no TensorFlow, behaviour chosen by TF_CONFIG.
FAKE_TASK = r"""
import json, os, signal, sys, time
args = sys.argv[1:]
task = {"type": args[args.index("--job-name") + 1], "index": args[args.index("--task-index") + 1]}
assert json.load(open(args[args.index("--cluster") + 1]))["cluster"] and "TF_CONFIG" not in os.environ
name = f"{task['type']}:{task['index']}"
mode = args[-1]
if mode == "stubborn" and name == "worker:0":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # must be killed after the grace period
print(f"hello from {name}", flush=True)
if mode in ("fail", "stubborn") and name == "worker:1":
    time.sleep(1.0 if mode == "stubborn" else 0.0)  # worker 0 ignores SIGTERM by then
    sys.exit(3)
if mode == "ok" and task["type"] == "worker":
    sys.exit(0)
time.sleep(600)
"""


def _gone(pid):
    return not pathlib.Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("mode, expected", [("ok", 0), ("fail", 3), ("stubborn", 3)])
def test_launcher_stops_every_task_in_order(mode, expected):
    """Workers done: ps stopped. A worker fails: the others are stopped, status non-zero."""
    lines = []
    result = cluster_local.launch(
        [mode], workers=2, ps=1, grace_secs=1.0, timeout_secs=60, log=lines.append,
        command=[sys.executable, "-c", FAKE_TASK])
    assert result.exit_code == expected, lines
    assert "[worker:1] hello from worker:1" in lines and "[ps:0] hello from ps:0" in lines
    assert result.seconds < 30
    assert all(_gone(pid) for pid in result.pids.values())
    if mode == "stubborn":
        assert any("worker:0 did not stop" in line and "killed" in line for line in lines)
        assert result.returncodes["worker:0"] == -signal.SIGKILL


def test_launcher_is_stopped_by_sigterm():
    lines = []
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        result = cluster_local.launch(["forever"], workers=2, ps=1, grace_secs=5,
                                      timeout_secs=60, log=lines.append,
                                      command=[sys.executable, "-c", FAKE_TASK])
    finally:
        timer.cancel()
    assert result.exit_code == cluster_local.EXIT_INTERRUPTED
    assert result.reason == "stopped by SIGTERM" and result.seconds < 30
    assert all(_gone(pid) for pid in result.pids.values())


def _port_is_free(address):
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # the gRPC servers listen on every interface
            sock.bind(("0.0.0.0", int(port)))
        except OSError:
            return False
    return True


def listening(port, proc_net="/proc/net"):
    """Local addresses in LISTEN state on ``port`` in /proc/net/tcp and tcp6 (hex, as the
    kernel writes them: 0100007F is 127.0.0.1, 000...0 the wildcard)."""
    found = []
    for name in ("tcp", "tcp6"):
        with open(f"{proc_net}/{name}", encoding="ascii") as f:
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                address, local_port = fields[1].rsplit(":", 1)
                if fields[3] == "0A" and int(local_port, 16) == port:
                    found.append(f"{name}:{address}")
    return found


# The worker of a cluster-local run whose ps task is the real `fcn-tf1 train` server: reports
# what listens on the ps port and which interfaces exist, as seen from inside the tasks'
# namespace, then waits until the test has looked from outside.
CHECK_TASK = r"""
import json, os, subprocess, sys, time
sys.path.insert(0, os.environ["CHECK_DIR"])
from check_helpers import listening
args = sys.argv[1:]
if args[args.index("--job-name") + 1] == "ps":
    os.execv(sys.executable, [sys.executable, "-m", "fcn_tf1.cli", "train"] + args)
spec = json.load(open(args[args.index("--cluster") + 1]))["cluster"]
port = int(spec["ps"][0].rsplit(":", 1)[1])
deadline = time.monotonic() + 120
while not listening(port) and time.monotonic() < deadline:
    time.sleep(0.2)
interfaces = [line.split(":")[0].strip() for line in open("/proc/net/dev").read().splitlines()[2:]]
print("INSIDE " + json.dumps({"port": port, "listening": listening(port),
                              "interfaces": interfaces}), flush=True)
done = os.path.join(os.environ["CHECK_DIR"], "looked")
while not os.path.exists(done) and time.monotonic() < deadline:
    time.sleep(0.1)
"""


@pytest.mark.integration
def test_cluster_local_servers_listen_on_loopback_only(tmp_path):
    """TensorFlow binds [::]:PORT whatever the cluster names; cluster-local's tasks run in a
    private network namespace: the real ps server's port is open there, where loopback is
    the only interface, and nowhere in this (the host's) namespace."""
    helpers = pathlib.Path(__file__).read_text().split("def listening", 1)[1].split("\n\n\n")[0]
    (tmp_path / "check_helpers.py").write_text("def listening" + helpers + "\n")
    seen, lines = {}, []

    def log(line):
        lines.append(line)
        if line.startswith("[worker:0] INSIDE "):
            seen.update(json.loads(line.split("INSIDE ", 1)[1]))
            seen["outside"] = listening(seen["port"])
            (tmp_path / "looked").write_text("")
    env = dict(os.environ, CHECK_DIR=str(tmp_path))
    result = cluster_local.launch([], workers=1, ps=1, grace_secs=10, timeout_secs=180, log=log,
                                  command=[sys.executable, "-c", CHECK_TASK], env=env)
    if not result.isolated:
        pytest.skip("no private network namespace here (needs CAP_SYS_ADMIN): "
                    + next((line for line in lines if "WARNING" in line), ""))
    assert result.exit_code == 0, "\n".join(lines[-30:])
    assert seen["listening"], seen  # the ps server did listen, on the wildcard address
    assert seen["interfaces"] == ["lo"], seen
    assert seen["outside"] == [], seen
    assert any("NO authentication" in line for line in lines if line.startswith("[ps:0]"))


STEP_LINE = re.compile(r"^\[(worker:\d)\] step (\d+)/\d+  loss ([0-9.]+)")
DONE_LINE = re.compile(r"^\[(worker:\d)\] worker:\d done: (\d+) local steps, global step (\d+)")


def test_one_ps_two_workers_on_localhost(tmp_path):
    """1 ps + 2 workers as separate processes, synchronous updates, a few real steps.

    With SyncReplicasOptimizer the global step advances once per 2 aggregated
    gradients: the workers' local steps add up to at least twice the global
    step (a gradient that arrives stale is dropped, so a little more).
    """
    max_steps = 8
    train_dir = tmp_path / "run"
    lines = []
    result = cluster_local.launch(
        TINY + ["--max-steps", str(max_steps), "--train-dir", str(train_dir),
                "--log-every-steps", "1", "--lr-schedule", "constant", "--summary-every-steps",
                "4"], workers=2, ps=1, grace_secs=20, timeout_secs=240, log=lines.append)
    log = "\n".join(lines)
    assert result.exit_code == 0, log[-4000:]
    assert set(result.returncodes.values()) == {0}, result.returncodes

    steps = [(m[1], int(m[2]), float(m[3])) for m in map(STEP_LINE.match, lines) if m]
    done = {m[1]: (int(m[2]), int(m[3])) for m in map(DONE_LINE.match, lines) if m}
    assert {w for w, _, _ in steps} == {"worker:0", "worker:1"}, "both workers must train"
    assert set(done) == {"worker:0", "worker:1"}
    assert all(global_step == max_steps for _, global_step in done.values()), done
    local_steps = sum(local for local, _ in done.values())
    assert 2 * max_steps <= local_steps <= 3 * max_steps, done
    # loss: finite everywhere and lower at the end (constant lr, 16 real batches)
    values = [loss for _, _, loss in sorted(steps, key=lambda s: s[1])]
    assert np.all(np.isfinite(values))
    assert np.mean(values[-4:]) < np.mean(values[:4]), values

    # the chief alone wrote the run: config, checkpoints, summaries, final validation
    assert tf.train.latest_checkpoint(str(train_dir)).endswith(f"model.ckpt-{max_steps}")
    assert config_lib.load(train_dir).max_steps == max_steps
    assert list((train_dir / "train").glob("events.out.tfevents.*"))  # TensorBoard runs
    assert list((train_dir / "validation").glob("events.out.tfevents.*"))
    assert json.loads((train_dir / "metrics.json").read_text())["step"] == max_steps
    assert not (train_dir / ".lock").exists()
    # ... and single-process eval rebuilds the graph and restores it by variable name
    assert cli.main(["eval", "--train-dir", str(train_dir)]) == 0

    # nothing left behind
    assert all(_gone(pid) for pid in result.pids.values()), result.pids
    addresses = [a for hosts in result.cluster.values() for a in hosts]
    assert all(_port_is_free(a) for a in addresses), addresses


def _real_batch(path, count, size):
    with h5data.H5Dataset(path) as data:
        images = np.stack([data.image(i) for i in range(count)]).astype(np.float32)
        labels = np.stack([data.label(i) for i in range(count)]).astype(np.int64)
    return images[:, :size, :size], labels[:, :size, :size]


def test_towers_give_the_gradient_of_the_whole_batch(default_data):
    """Two towers on two virtual CPUs: the combined gradient is that of one tower on the batch.

    Why the comparison is made in inference mode (``is_training`` False): in
    training mode each tower's batch norm normalises with the statistics of its
    own half of the batch, which is a different function of the weights than
    normalising with the statistics of the whole batch, so the gradients differ
    by design (as in every multi-tower setup). With the moving averages batch
    norm is the same fixed affine map in both graphs, and dropout is off, so
    the only difference left is the combination of the tower gradients. Most
    of the pixels of image 0 are made void, so the towers have very different
    numbers of valid pixels: a plain average of their gradients would be wrong,
    the valid-pixel weighting must make it exact (up to float32 summation
    order: relative tolerance 1e-5). The weights are perturbed first so that
    the zero-initialised score layers do not hide anything. Class weights are
    on, since they change the per-tower denominators too.
    """
    images, labels = _real_batch(default_data, 4, 64)
    labels[0, :48] = 255
    class_weights = tuple(float(w) for w in np.linspace(0.5, 2.0, 33))
    cfg = config_lib.RunConfig(data=str(default_data), width=4, crop_size=64, batch_size=4,
                               class_weighting="median_frequency", class_weights=class_weights)
    with tf.Graph().as_default():
        towers, session_config, _ = devices.tower_devices(2, virtual_cpus=True)
        net = graph.build_training_graph(cfg, towers)
        # the reference: one forward pass on the whole batch, sharing the same variables
        logits = model.inference(net.images, num_classes=33, variant=cfg.variant,
                                 backbone=cfg.backbone, width=cfg.width, is_training=False)
        reference_loss = (losses.loss(logits, net.labels, class_weights=list(class_weights))
                          + cfg.weight_decay * model.weight_decay_loss())
        variables = [v for _, v in net.grads_and_vars]
        reference_grads = tf.gradients(reference_loss, variables)
        counter = [v for v in tf1.global_variables() if v.op.name == "fcn/dropout_counter"][0]
        moving_mean = [v for v in tf1.global_variables()
                       if v.op.name == "fcn/conv1_1/moving_mean"][0]
        perturb = tf.group(*[v.assign_add(0.05 * tf.random.stateless_normal(
            tf.shape(v), [i, 0])) for i, v in enumerate(tf1.trainable_variables())])
        with tf1.Session(config=session_config) as session:
            assert len(session.list_devices()) >= 2
            session.run(tf1.global_variables_initializer())
            session.run(perturb)
            feed = {net.images: images, net.labels: labels, net.is_training: False}
            tower_grads, grads, loss, ref_loss = session.run(
                [[g for g, _ in net.grads_and_vars], reference_grads, net.total_loss,
                 reference_loss], feed)
            np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
            for variable, mine, theirs in zip(variables, tower_grads, grads):
                error = np.linalg.norm(mine - theirs) / max(np.linalg.norm(theirs), 1e-12)
                assert error < 1e-5, (variable.op.name, error)
            # training steps: one counter step per batch, tower 0 moves the averages
            before = session.run(moving_mean)
            for expected in (1, 2):
                session.run(net.train_op, {**feed, net.is_training: True})
                assert session.run(counter) == expected
            assert not np.allclose(session.run(moving_mean), before)


def test_towers_train_and_eval(tmp_path):
    """``fcn-tf1 train --towers 2`` trains, checkpoints and evaluates like a single tower."""
    train_dir = tmp_path / "run"
    assert cli.main(["train", "--towers", "2", "--virtual-cpu-towers", "--max-steps", "3",
                     "--train-dir", str(train_dir), "--log-every-steps", "1"] + TINY) == 0
    assert tf.train.latest_checkpoint(str(train_dir)).endswith("model.ckpt-3")
    assert cli.main(["eval", "--train-dir", str(train_dir)]) == 0


def test_cluster_refuses_a_time_budget(tmp_path, default_data):
    # the tasks share no clock: a budget would stop them at different steps
    chief = cluster.task_from_tf_config(json.dumps({"cluster": CLUSTER,
                                                        "task": {"type": "chief"}}))
    requested = config_lib.RunConfig(data=str(default_data), max_minutes=5.0)
    with pytest.raises(ConfigError, match="--max-minutes 5: not supported in a cluster"):
        distributed.train_replica(requested, tmp_path / "run", chief, log=lambda *a: None)
    assert not (tmp_path / "run" / ".lock").exists()
    # nor weight averaging and the end-of-run prior correction, single-trainer features
    for option, change in (("--ema-decay 0.999", {"ema_decay": 0.999}),
                           ("--prior-correction-floor 0.79", {"prior_correction_floor": 0.79}),
                           ("--prior-correction-choice mean_iou",
                            {"prior_correction_choice": "mean_iou"})):
        with pytest.raises(ConfigError, match=f"{option}: not supported in a cluster"):
            distributed.train_replica(requested.replace(max_minutes=0.0, **change),
                                      tmp_path / "run", chief, log=lambda *a: None)


def test_chief_never_saves_nan_weights(tmp_path):
    """The chief's CheckpointSaverHook runs checkpoints.FiniteWeightsGuard: weights that
    turned NaN stop the run (exit status 3) before they are saved."""
    from fcn_tf1.errors import TrainingDiverged
    chief = cluster.task_from_tf_config(json.dumps({"cluster": LOOPBACK,
                                                    "task": {"type": "worker", "index": 0}}))
    config = config_lib.RunConfig(max_steps=10, save_every_steps=1, summary_every_steps=0)
    with tf.Graph().as_default():
        global_step = tf1.train.get_or_create_global_step()
        weight = tf1.get_variable("w", initializer=1.0)
        step, poison = tf1.assign_add(global_step, 1), weight.assign(float("nan"))
        args = distributed.session_args(config, tmp_path, chief, None, "")
        assert args["save_checkpoint_steps"] is None and args["save_checkpoint_secs"] is None
        with pytest.raises(TrainingDiverged, match="NaN/Inf after step 2.*step 1. is the last good"):
            with tf1.train.MonitoredTrainingSession(**args) as session:
                session.run(step)
                session.run(poison)
                session.run(step)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-1")
    assert not list(tmp_path.glob("model.ckpt-2*"))


@pytest.mark.integration
def test_chief_resumes_over_a_damaged_state_file(tmp_path):
    """A garbled `checkpoint` state file: the restarted chief resumes from model.ckpt-4 (its
    state file rewritten by checkpoints.repair_state_file) instead of starting at step 0
    and overwriting it."""
    train_dir = tmp_path / "run"
    argv = TINY + ["--train-dir", str(train_dir), "--save-every-steps", "2",
                   "--lr-schedule", "constant", "--num-prediction-pngs", "0"]
    lines = []
    first = cluster_local.launch(argv + ["--max-steps", "4"], workers=1, ps=1, grace_secs=20,
                                 timeout_secs=240, log=lines.append)
    assert first.exit_code == 0, "\n".join(lines[-20:])
    kept = {p.name: p.read_bytes() for p in train_dir.glob("model.ckpt-4.*")}
    assert kept
    (train_dir / "checkpoint").write_text("garbage \x00")
    lines.clear()
    second = cluster_local.launch(argv + ["--max-steps", "6"], workers=1, ps=1, grace_secs=20,
                                  timeout_secs=240, log=lines.append)
    assert second.exit_code == 0, "\n".join(lines[-20:])
    done = [m for m in map(DONE_LINE.match, lines) if m]
    # 2 updates from step 4 (a stale gradient may cost one more step), not 6 from step 0
    assert len(done) == 1 and 2 <= int(done[0][2]) <= 3 and int(done[0][3]) == 6, lines[-10:]
    assert all((train_dir / name).read_bytes() == data for name, data in kept.items())
    assert tf.train.latest_checkpoint(str(train_dir)).endswith("model.ckpt-6")
