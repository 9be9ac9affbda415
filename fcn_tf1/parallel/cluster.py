"""The cluster a distributed run uses, and this process's task in it (no TensorFlow needed).

API::

    ClusterTask(cluster, job_name, task_index)   this process's place in the cluster
    task_from_tf_config(text)                    the standard TF_CONFIG JSON -> ClusterTask
    task_from_file(path, job_name, task_index)   ``--cluster FILE --job-name --task-index``
    resolve_task(cluster_file, job_name, task_index, environ, use_tf_config, allow_remote)
                                                 --cluster FILE, or TF_CONFIG when asked for
    remote_addresses(cluster)                    the addresses that are not loopback
    exposure_warning(task)                       the start-up warning of every task

Security: TensorFlow's gRPC server (``tf.distribute.Server``) has no
authentication and no encryption, and it cannot be told which address to
listen on: ``GrpcServer::Init`` binds ``0.0.0.0:PORT`` (dual stack, so
``[::]``) whatever host the cluster spec names; ``ServerDef`` only lets one
change the port and the protocol. So a task's port is open on every
interface of its network namespace. Two consequences here: joining a cluster
is always an explicit choice (``--cluster FILE``, or TF_CONFIG only with
``use_tf_config``: cloud platforms set TF_CONFIG for jobs that never meant to
open a server), and a cluster naming non-loopback addresses is refused
unless ``allow_remote`` says the network is private (docs/DISTRIBUTED.md).
``fcn-tf1 cluster-local`` runs its tasks in a private network namespace.

A cluster has ``ps`` tasks (they hold the variables) and *replicas* that
train: an optional single ``chief`` and ``worker`` tasks. The chief is
replica 0; without a ``chief`` job ``worker:0`` is the chief (the TF1
convention). Every mistake in a description is a one-line ``ConfigError``.
"""
import dataclasses
import ipaddress
import json
import os
import pathlib
import sys
from typing import Dict, Tuple

from fcn_tf1.errors import ConfigError

JOBS = ("chief", "worker", "ps")


@dataclasses.dataclass(frozen=True)
class ClusterTask:
    """This process's place in a cluster.

    Attributes:
      cluster: {job name: tuple of "host:port"} with jobs among chief, worker, ps.
      job_name: 'chief', 'worker' or 'ps'.
      task_index: index of this task in its job.
    """
    cluster: Dict[str, Tuple[str, ...]]
    job_name: str
    task_index: int

    @property
    def replicas(self):
        """The (job, index) of every task that computes gradients, the chief first."""
        return ([("chief", i) for i in range(len(self.cluster.get("chief", ())))]
                + [("worker", i) for i in range(len(self.cluster.get("worker", ())))])

    @property
    def num_replicas(self):
        return len(self.replicas)

    @property
    def replica_index(self):
        """This task's rank among the replicas (0 = chief); None for a ps task."""
        me = (self.job_name, self.task_index)
        return self.replicas.index(me) if me in self.replicas else None

    @property
    def is_chief(self):
        return self.replica_index == 0

    @property
    def device(self):
        return f"/job:{self.job_name}/task:{self.task_index}"

    @property
    def address(self):
        return self.cluster[self.job_name][self.task_index]

    def cluster_spec(self):
        import tensorflow as tf
        return tf.train.ClusterSpec({job: list(hosts) for job, hosts in self.cluster.items()})


def parse_cluster(values, source):
    """Validates a ``cluster`` object: {"chief": [..], "worker": [..], "ps": [..]}."""
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"{source}: 'cluster' must be a non-empty JSON object")
    unknown = sorted(set(values) - set(JOBS))
    if unknown:
        raise ConfigError(f"{source}: unsupported jobs {', '.join(unknown)} "
                          f"(expected {', '.join(JOBS)})")
    cluster = {}
    for job, hosts in values.items():
        if (not isinstance(hosts, list) or not hosts
                or not all(isinstance(h, str) and h.rpartition(":")[2].isdigit() for h in hosts)):
            raise ConfigError(f"{source}: cluster.{job} must be a non-empty list of "
                              f"'host:port' strings, got {hosts!r}")
        cluster[job] = tuple(hosts)
    all_hosts = [h for hosts in cluster.values() for h in hosts]
    if len(set(all_hosts)) != len(all_hosts):
        raise ConfigError(f"{source}: the same host:port appears twice in the cluster")
    if len(cluster.get("chief", ())) > 1:
        raise ConfigError(f"{source}: at most one chief task")
    if not cluster.get("ps"):
        raise ConfigError(f"{source}: needs at least one 'ps' task to hold the variables")
    if not cluster.get("chief") and not cluster.get("worker"):
        raise ConfigError(f"{source}: needs a 'chief' or at least one 'worker' task")
    return cluster


def _task(cluster, job_name, task_index, source):
    if job_name not in cluster:
        raise ConfigError(f"{source}: task type {job_name!r} is not a job of the cluster "
                          f"({', '.join(sorted(cluster))})")
    if (isinstance(task_index, bool) or not isinstance(task_index, int)
            or not 0 <= task_index < len(cluster[job_name])):
        raise ConfigError(f"{source}: task index {task_index!r} out of range for job "
                          f"{job_name!r} ({len(cluster[job_name])} tasks)")
    return ClusterTask(cluster, job_name, task_index)


def task_from_tf_config(text, source="TF_CONFIG", job_name=None, task_index=None):
    """Parses the standard TF_CONFIG JSON.

    Example: ``{"cluster": {"worker": ["h1:2222", "h2:2222"], "ps": ["h3:2222"]},
    "task": {"type": "worker", "index": 1}}``. ``job_name``/``task_index``, when
    given, replace the ``task`` entry (or stand in for a missing one).
    """
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(values, dict) or "cluster" not in values:
        raise ConfigError(f"{source}: expected a JSON object with a 'cluster' entry")
    cluster = parse_cluster(values["cluster"], source)
    task = values.get("task") or {}
    if not isinstance(task, dict):
        raise ConfigError(f"{source}: 'task' must be an object like "
                          '{"type": "worker", "index": 0}')
    job = job_name if job_name is not None else task.get("type")
    index = task_index if task_index is not None else task.get("index", 0)
    if job is None:
        raise ConfigError(f"{source}: no task type (give task.type or --job-name)")
    return _task(cluster, job, index, source)


def task_from_file(path, job_name, task_index=0):
    """``--cluster FILE``: JSON holding ``{"cluster": {...}}`` (or just the cluster object)."""
    path = pathlib.Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: unreadable cluster file ({err})") from None
    if isinstance(values, dict) and "cluster" not in values:
        values = {"cluster": values}
    if job_name is None:
        raise ConfigError(f"{path}: --cluster needs --job-name (chief, worker or ps)")
    return task_from_tf_config(json.dumps(values), str(path), job_name, task_index)


def resolve_task(cluster_file=None, job_name=None, task_index=None, environ=None,
                 use_tf_config=False, allow_remote=False, warn=None):
    """The ClusterTask of this process, or None for single-process training.

    Args:
      cluster_file: ``--cluster FILE``; wins over TF_CONFIG.
      job_name, task_index: ``--job-name``/``--task-index``; complete or
        override the task of the file or of TF_CONFIG.
      environ: the environment (default os.environ).
      use_tf_config: join the cluster of the ``TF_CONFIG`` environment
        variable. Without it TF_CONFIG is ignored, with a warning: a variable a
        cloud platform sets must not silently open an unauthenticated server.
      allow_remote: accept addresses that are not loopback (a private network
        the user vouches for); otherwise such a cluster is a ConfigError.
      warn: callable(str) for the warning (default: a line on stderr).
    """
    environ = os.environ if environ is None else environ
    warn = warn or (lambda line: print(f"fcn-tf1: warning: {line}", file=sys.stderr, flush=True))
    text = environ.get("TF_CONFIG", "").strip()
    if cluster_file is not None:
        task = task_from_file(cluster_file, job_name, 0 if task_index is None else task_index)
        source = str(cluster_file)
    elif text and use_tf_config:
        task = task_from_tf_config(text, "TF_CONFIG", job_name, task_index)
        source = "TF_CONFIG"
    else:
        if text:
            warn("TF_CONFIG is set but ignored: this process trains on its own. To join the "
                 "cluster it describes, pass --use-tf-config (TensorFlow's cluster runtime "
                 "has no authentication: see docs/DISTRIBUTED.md)")
        if job_name is not None or task_index is not None:
            raise ConfigError("--job-name/--task-index need --cluster FILE "
                              "(or TF_CONFIG with --use-tf-config)")
        return None
    remote = remote_addresses(task.cluster)
    if remote and not allow_remote:
        raise ConfigError(
            f"{source}: {remote[0]} is not a loopback address; TensorFlow's cluster runtime has "
            "no authentication and listens on every interface: run the cluster on a private "
            "network and pass --allow-remote-cluster (docs/DISTRIBUTED.md)")
    return task


def _is_loopback(address):
    host = address.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def remote_addresses(cluster):
    """The task addresses of ``cluster`` that are not loopback (127.0.0.0/8, ::1, localhost)."""
    return [a for hosts in cluster.values() for a in hosts if not _is_loopback(a)]


def exposure_warning(task):
    """The start-up warning of a task: what anyone who reaches its port can do."""
    port = task.address.rpartition(":")[2]
    return (f"{task.job_name}:{task.task_index} opens TensorFlow's gRPC server on port {port} "
            "of EVERY network interface of its network namespace (TensorFlow cannot bind one "
            "address), with NO authentication and NO encryption: whoever reaches the port can "
            "read and change the model and run code in this process. Use a private network "
            "or a network namespace (docs/DISTRIBUTED.md)")
