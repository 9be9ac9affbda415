"""The training directory: writability check, a single-trainer lock, atomic file writes.

Layout of a run directory::

    config.json            the RunConfig (fcn_tf1.config)
    checkpoint, model.ckpt-STEP.{index,data-*}   tf.compat.v1.train.Saver files
    events.out.tfevents.*  TensorBoard summaries
    metrics.json           the last validation pass (FCN metrics, per class)
    predictions/NAME.png   input | ground truth | prediction of a few validation images
    .lock                  flock(2)-ed by the trainer that owns the directory (pid, host inside)

Files a killed trainer was still writing (TensorFlow's ``*.tempstate*`` and
``*.tmp<hex>``, our ``.NAME.<random>.tmp``) are never read; the next trainer
removes them once it holds the lock (:func:`remove_partial_files`).
"""
import contextlib
import fcntl
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
    """An exclusive ``flock(2)`` on ``TRAIN_DIR/.lock`` so two trainers never share a train dir.

    The kernel holds the lock for the life of the open file and drops it when
    the trainer exits or is killed, so there is no stale lock to detect and no
    host name to compare. The file holds ``pid host`` of the holder, for the
    refusal message only. On release the holder unlinks the file while still
    locking it; a trainer that locked an inode which was unlinked meanwhile
    sees that the path names another file and tries again, so two trainers
    can never both hold the lock.
    """

    def __init__(self, train_dir):
        self.path = pathlib.Path(train_dir) / LOCK_NAME
        self._fd = None

    def acquire(self):
        for _ in range(20):  # each retry means the holder released in between: rare
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise FcnError(f"{self.path}: train dir is in use by another trainer ({holder}); "
                               "wait for it or use another --train-dir") from None
            except BaseException:
                os.close(fd)
                raise
            if not _same_file(fd, self.path):  # released and unlinked before our flock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            self._fd = fd
            return self
        raise FcnError(f"{self.path}: could not take the train dir lock")

    @staticmethod
    def _holder(fd):
        """'pid P on HOST' as the holder wrote it, for the message only."""
        try:
            fields = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
            return f"pid {int(fields[0])} on {fields[1]}"
        except (OSError, ValueError, IndexError):
            return "holder unknown"

    @property
    def held(self):
        return self._fd is not None

    def release(self):
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()  # still locked: no one else can hold this inode
        except OSError:
            pass
        finally:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _same_file(fd, path):
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


# What TensorFlow (``NAME.tempstate<digits>``, ``NAME.tmp<32 hex>``) and atomic_write
# (``.NAME.<random>.tmp``; earlier versions ``.NAME.json.<random>``, ``NAME.png.tmp``)
# call a file before renaming it into place.
_PARTIAL_FILE = re.compile(r".*\.tempstate\d*$|.*\.tmp[0-9a-f]{32}$|\.(config|metrics|progress)\.json\..+$"
                           r"|learning_curve\.png\.tmp$|\..+\.[A-Za-z0-9_]{6,}\.tmp$")


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


def _umask():
    """The process umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_file(path):
    """Makes a written file durable (a file that vanished meanwhile is skipped)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory):
    """Makes a rename or a new file in ``directory`` durable (a no-op where dirs cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the data itself was synced
    finally:
        os.close(fd)


def atomic_write(path, write):
    """Writes ``path`` all or nothing: the one way this package replaces a file.

    ``write(f)`` fills a new file with a unique name in the same directory
    (``tempfile.mkstemp``: never an existing file, never through a symlink);
    it is flushed and fsync-ed, given the mode a new file gets under the
    user's umask (0666 & ~umask, not mkstemp's 0600), renamed over ``path``
    (a symlink at ``path`` is replaced, not followed) and the directory is
    fsync-ed, so after a crash ``path`` is the old file or the new one.

    Args:
      path: the file to write.
      write: callable(binary file object).

    Raises:
      OSError: the file cannot be written (full disk, read-only, ...); an
        earlier version of it is left as it was, the temp file is removed.
    """
    path = pathlib.Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def write_json(path, payload):
    """Writes ``payload`` as indented JSON through :func:`atomic_write`.

    Raises:
      FcnError: the file cannot be written; an earlier version is left as it was.
    """
    text = json.dumps(payload, indent=2) + "\n"
    try:
        atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as err:
        raise FcnError(f"{path}: cannot write ({err.strerror or err})") from None
