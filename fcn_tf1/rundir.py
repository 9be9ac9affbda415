"""The training directory: writability check, a single-trainer lock, atomic JSON files.

Layout of a run directory::

    config.json            the RunConfig (fcn_tf1.config)
    checkpoint, model.ckpt-STEP.{index,data-*}   tf.compat.v1.train.Saver files
    events.out.tfevents.*  TensorBoard summaries
    metrics.json           the last validation pass (FCN metrics, per class)
    predictions/NAME.png   input | ground truth | prediction of a few validation images
    .lock                  pid of the trainer that owns the directory

Files a killed trainer was still writing (TensorFlow's ``*.tempstate*`` and
``*.tmp<hex>``, our ``.NAME.json.*``) are never read; the next trainer removes
them once it holds the lock (:func:`remove_partial_files`).
"""
import json
import os
import pathlib
import re
import socket
import tempfile

from fcn_tf1.errors import FcnError

LOCK_NAME = ".lock"


def ensure_writable(train_dir):
    """Creates ``train_dir`` if needed and proves it writable before any training starts."""
    train_dir = pathlib.Path(train_dir)
    try:
        train_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=train_dir) as probe:
            probe.write(b"x")  # a full disk still lets one create an empty file
            probe.flush()
    except OSError as err:
        raise FcnError(f"{train_dir}: train dir is not writable ({err.strerror or err})") from None
    return train_dir


def pid_alive(pid):
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process stays a zombie until its parent reaps it; it will never train again.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class TrainDirLock:
    """An exclusive lock file so two trainers never share one train dir.

    The lock holds ``pid host``. A lock left by a process that no longer runs
    on this host is stale and taken over, so a killed trainer never blocks
    the next one.
    """

    def __init__(self, train_dir):
        self.path = pathlib.Path(train_dir) / LOCK_NAME
        self._held = False

    def acquire(self):
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None:
                    raise FcnError(
                        f"{self.path}: train dir is in use by another trainer (pid {owner}); "
                        "wait for it or use another --train-dir") from None
                try:  # stale: its process is gone
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me)
            self._held = True
            return self
        raise FcnError(f"{self.path}: could not take the train dir lock")

    def _owner(self):
        """The pid of a live owner, or None when the lock is stale or unreadable."""
        try:
            fields = self.path.read_text().split()
            pid, host = int(fields[0]), fields[1]
        except (OSError, ValueError, IndexError):
            return None
        if host != socket.gethostname():
            return pid  # another host: cannot check, assume alive
        return pid if pid != os.getpid() and pid_alive(pid) else None

    def release(self):
        if self._held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self._held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# What TensorFlow (``NAME.tempstate<digits>``, ``NAME.tmp<32 hex>``) and write_json
# (``.NAME.<random>``) call a file before renaming it into place.
_PARTIAL_FILE = re.compile(r".*\.tempstate\d*$|.*\.tmp[0-9a-f]{32}$|\.(config|metrics|progress)\.json\..+$"
                           r"|learning_curve\.png\.tmp$")


def remove_partial_files(train_dir):
    """Deletes files a killed trainer left half-written; call only while holding the lock.

    Returns:
      the names removed, sorted.
    """
    removed = []
    for path in pathlib.Path(train_dir).iterdir():
        if _PARTIAL_FILE.match(path.name) and path.is_file():
            try:
                path.unlink()
                removed.append(path.name)
            except OSError:
                pass  # only disk space is at stake
    return sorted(removed)


def write_json(path, payload):
    """Writes JSON atomically: a temp file in the same directory, then rename.

    Raises:
      FcnError: the file cannot be written (full disk, read-only, ...); an
        earlier version of it is left as it was.
    """
    path = pathlib.Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(err, OSError):
            raise FcnError(f"{path}: cannot write ({err.strerror or err})") from None
        raise
