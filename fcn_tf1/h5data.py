"""Prepare (released files -> one HDF5 file, atomically) and read it back, validated.

The HDF5 layout, written by :func:`prepare` and checked by :class:`H5Dataset`::

    images   uint8 [N, 256, 256, 3]   RGB; one gzip chunk per image
    labels   uint8 [N, 256, 256]      0..32, void 255 (the contract in fcn_tf1.siftflow)
    names    utf-8 str [N]            e.g. "coast_arnat59"
    attrs    class_names (33 str), num_classes = 33, void_label = 255,
             source_split (split name or names-file path)

API::

    prepare(data_dir, out_path, split=None, names_file=None, ..., overwrite=False) -> summary
    fingerprint(path)                   "bytes:images:sha256" of what the file holds
    H5Dataset(path)                     validated read-only access (a context manager):
        .names, .class_names, .num_classes, .void_label, .image_shape, len()
        .image(i), .label(i)            one image / label map, labels checked on read
        .label_counts(indices), .label_statistics(indices), .class_presence(indices)
        .split(val_fraction)            (train, validation) indices
        .indices_of(names)              positions of names in the file

Batches for training and evaluation are streamed from this file by fcn_tf1.batches.
"""
import contextlib
import glob
import hashlib
import os
import pathlib
import secrets
import signal
import sys
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
from tqdm import tqdm

from fcn_tf1 import rundir, siftflow
from fcn_tf1.errors import ConfigError, DataError, reason
from fcn_tf1.siftflow import IMAGE_SIZE, NUM_CLASSES, VOID_LABEL

# Measured on SIFT Flow: images (natural photos) shrink to ~70% at any level; level 4 keeps
# label maps at ~1.5 KB for little time, higher levels only cost time.
GZIP_LEVEL = 4


def _encode_one(task):
    """Decodes one image/label pair and deflates each (runs in a worker process).

    Returns:
        (image chunk bytes, label chunk bytes, number of void pixels).
    """
    image_file, label_file = task
    image = siftflow.read_image(image_file)
    label = siftflow.read_label(label_file)
    # zlib.compress output is exactly what HDF5's gzip (deflate) filter stores, so the
    # chunks can be written directly and compression runs on every core, not only the parent.
    return (zlib.compress(image.tobytes(), GZIP_LEVEL), zlib.compress(label.tobytes(), GZIP_LEVEL),
            int(np.count_nonzero(label == VOID_LABEL)))


def _ignore_sigint():
    # Ctrl-C reaches the whole process group; only the parent should react (and clean up).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _encoded(tasks, workers):
    """Yields the results of ``_encode_one`` over ``tasks``, in order."""
    if workers <= 1 or len(tasks) <= 1:
        yield map(_encode_one, tasks)
        return
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=_ignore_sigint)
    try:
        yield pool.map(_encode_one, tasks, chunksize=4)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on error, drop the queued work


def _write(part, names, tasks, class_names, source, workers, progress):
    """Writes the whole HDF5 file at ``part``; returns the number of void pixels."""
    n, size = len(names), IMAGE_SIZE
    gzip = dict(compression="gzip", compression_opts=GZIP_LEVEL)
    void_pixels = 0
    with h5py.File(part, "x") as out:
        images = out.create_dataset("images", (n, size, size, 3), np.uint8,
                                    chunks=(1, size, size, 3), **gzip)
        labels = out.create_dataset("labels", (n, size, size), np.uint8,
                                    chunks=(1, size, size), **gzip)
        out.create_dataset("names", data=names, dtype=h5py.string_dtype("utf-8"))
        out.attrs["class_names"] = np.array(class_names, dtype=h5py.string_dtype("utf-8"))
        out.attrs["num_classes"] = NUM_CLASSES
        out.attrs["void_label"] = VOID_LABEL
        out.attrs["source_split"] = source
        with _encoded(tasks, workers) as results, tqdm(
                total=n, desc="prepare", unit="img", file=sys.stderr, disable=not progress) as bar:
            for i, (image_chunk, label_chunk, void_count) in enumerate(results):
                images.id.write_direct_chunk((i, 0, 0, 0), image_chunk)
                labels.id.write_direct_chunk((i, 0, 0), label_chunk)
                void_pixels += void_count
                bar.update()
    return void_pixels


def prepare(data_dir, out_path, split=None, names_file=None, limit_per_category=None,
            workers=None, progress=True, overwrite=False):
    """Converts the released SIFT Flow layout into one HDF5 file, atomically.

    Every listed name must have its image and label file (checked before any
    decoding). The file is written to a temporary name in the output directory
    and renamed at the end; on any error or interrupt the temporary file is
    removed and a file already at ``out_path`` is left untouched. An existing
    ``out_path`` is replaced only with ``overwrite``.

    Args:
        data_dir: SIFT Flow root (Images/, SemanticLabels/, SPLIT.txt).
        out_path: the HDF5 file to write (parent directories are created).
        split: split name, reads ``data_dir/SPLIT.txt`` (default "trainval").
        names_file: any file of names instead of ``split``.
        limit_per_category: keep only the first K names of each scene category.
        workers: decoding processes (default: the usable cores; 1 = in-process).
        progress: show a tqdm bar on stderr.
        overwrite: replace a file already at ``out_path`` (else DataError).

    Returns:
        dict with path, num_images, per_category (dict), void_fraction, file_bytes,
        seconds, source_split.

    Raises:
        DataError: missing directory, list or file; any bad image or label map.
        ConfigError: contradictory or out-of-range arguments.
    """
    start = time.perf_counter()
    if split is not None and names_file is not None:
        raise ConfigError("give either a split or a names file, not both")
    names, source, tasks = siftflow.list_split(data_dir, split, names_file, limit_per_category)
    out = pathlib.Path(out_path)
    if workers is None:
        # the cores this process may use (a container or taskset may allow fewer than exist)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count()
    if workers < 1:
        raise ConfigError(f"--processes {workers}: must be >= 1")
    if out.is_dir():
        raise DataError(f"{out}: is a directory, expected an HDF5 file name")
    if not overwrite and (out.exists() or out.is_symlink()):
        raise DataError(f"{out}: already exists; pass --overwrite to replace it")
    class_names = siftflow.read_class_names(data_dir)
    part = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_parts(out)
        void_pixels = _write(part, names, tasks, class_names, source, workers, progress)
        rundir.fsync_file(part)
        if overwrite:
            os.replace(part, out)
        else:  # a link fails if a file took the name meanwhile: never replaced unasked
            try:
                os.link(part, out)
            except FileExistsError:
                raise DataError(f"{out}: already exists; pass --overwrite to replace it") from None
            part.unlink()
        rundir.fsync_dir(out.parent)
    except BaseException as err:
        with contextlib.suppress(OSError):
            part.unlink()
        if isinstance(err, OSError):  # bad inputs arrive as DataError: this is the output side
            raise DataError(f"{out}: cannot write ({reason(err)})") from None
        raise
    return {"path": str(out), "num_images": len(names), "source_split": source,
            "per_category": dict(Counter(siftflow.category_of(n) for n in names)),
            "void_fraction": void_pixels / (len(names) * IMAGE_SIZE * IMAGE_SIZE),
            "file_bytes": out.stat().st_size, "seconds": time.perf_counter() - start}


FINGERPRINT_SAMPLES = 64


def fingerprint(path):
    """A cheap identity of a prepared file's contents: ``"BYTES:IMAGES:SHA256"``.

    The hash covers every name, the shapes and up to 64 evenly spaced label maps
    (their decoded bytes); the file's size is part of it too, so a re-compressed
    copy of the same data counts as another file (a resume on it needs
    --allow-other-data). A resumed run compares it to the one in config.json
    (run_setup.prepare_run).
    """
    path = pathlib.Path(path)
    with H5Dataset(path) as data:
        digest = hashlib.sha256()
        digest.update(repr((len(data), data.image_shape, data.num_classes,
                            data.void_label)).encode())
        for name in data.names:
            digest.update(name.encode("utf-8") + b"\0")
        count = min(len(data), FINGERPRINT_SAMPLES)
        for index in sorted({int(i) for i in np.linspace(0, len(data) - 1, count)}):
            # as stored, unchecked: a bad label is reported when training reaches it
            digest.update(np.ascontiguousarray(data._read(data._labels, "labels",
                                                          index)).tobytes())
        return f"{path.stat().st_size}:{len(data)}:{digest.hexdigest()[:32]}"


def _remove_dead_parts(out):
    """Deletes the temporary files of earlier prepares of ``out`` whose process is gone
    (a SIGKILL leaves one as large as the output); a running prepare's is kept."""
    for part in out.parent.glob(f".{glob.escape(out.name)}.*-*.part"):
        pid = part.name[len(out.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not rundir.pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                part.unlink()


def _check_stored_here(f, key, path):
    """DataError unless ``f[key]`` is a dataset whose data is inside the file itself.

    HDF5 can make a name point elsewhere: soft and external links, external
    storage (raw data in other files, named by the file) and virtual datasets
    (assembled from other files). Any of them lets a downloaded data file read
    files of the reader's choosing, so none is followed.
    """
    link = f.get(key, getlink=True)
    if link is None:
        raise DataError(f"{path}: no dataset '{key}' (not a file made by `fcn-tf1 prepare`)")
    if not isinstance(link, h5py.HardLink):
        kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
        raise DataError(f"{path}: '{key}' is {kind}; only datasets stored in the file are read")
    dataset = f.get(key)
    if not isinstance(dataset, h5py.Dataset):
        raise DataError(f"{path}: no dataset '{key}' (not a file made by `fcn-tf1 prepare`)")
    if dataset.is_virtual:
        raise DataError(f"{path}: '{key}' is a virtual dataset; only datasets stored in the "
                        "file are read")
    if dataset.external:
        raise DataError(f"{path}: '{key}' keeps its data in external files; only datasets "
                        "stored in the file are read")


class H5Dataset:
    """Read-only, validated access to a prepared HDF5 file (a context manager).

    Opening checks the structure (datasets, dtypes, shapes, lengths, attributes);
    label values are checked each time a label map is read.

    Attributes:
        path: pathlib.Path of the file.
        names: list of str [N].
        class_names: list of str [num_classes].
        num_classes: int (33 for SIFT Flow).
        void_label: int (255).
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            what = "not a file" if self.path.exists() else "no such HDF5 file"
            raise DataError(f"{self.path}: {what}")
        try:
            self._file = h5py.File(self.path, "r")
        except Exception as err:  # h5py raises OSError for truncated/corrupt/non-HDF5 files
            raise DataError(f"{self.path}: not a readable HDF5 file ({reason(err)})") from None
        try:
            self._validate()
        except BaseException as err:
            self._file.close()
            if isinstance(err, Exception) and not isinstance(err, DataError):
                raise DataError(f"{self.path}: corrupt HDF5 file ({reason(err)})") from None
            raise

    def _validate(self):
        f, p = self._file, self.path
        for key in ("images", "labels", "names"):
            _check_stored_here(f, key, p)
        images, labels, names = f["images"], f["labels"], f["names"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise DataError(f"{p}: images is {images.dtype} {images.shape}, "
                            "expected uint8 [N, H, W, 3]")
        if labels.dtype != np.uint8 or labels.ndim != 3 or labels.shape[1:] != images.shape[1:3]:
            raise DataError(f"{p}: labels is {labels.dtype} {labels.shape}, expected uint8 "
                            f"[N, {images.shape[1]}, {images.shape[2]}] to match images")
        if h5py.check_string_dtype(names.dtype) is None or names.ndim != 1:
            raise DataError(f"{p}: names is {names.dtype} {names.shape}, expected strings [N]")
        if not len(images) == len(labels) == len(names):
            raise DataError(f"{p}: mismatched lengths: images {len(images)}, labels {len(labels)}, "
                            f"names {len(names)}")
        if len(images) == 0:
            raise DataError(f"{p}: holds no images")
        self.names = [str(n) for n in names.asstr()[()]]
        self._index = {name: i for i, name in enumerate(self.names)}
        if len(self._index) != len(self.names):
            raise DataError(f"{p}: names are not distinct")
        self.num_classes = int(f.attrs.get("num_classes", NUM_CLASSES))
        self.void_label = int(f.attrs.get("void_label", VOID_LABEL))
        if not 1 <= self.num_classes <= self.void_label <= 255:
            raise DataError(f"{p}: num_classes {self.num_classes} / void_label {self.void_label} "
                            "out of range (need 1 <= num_classes <= void_label <= 255)")
        default = siftflow.CLASS_NAMES if self.num_classes == NUM_CLASSES else [
            f"class{i}" for i in range(self.num_classes)]
        self.class_names = [c.decode("utf-8") if isinstance(c, bytes) else str(c)
                            for c in f.attrs.get("class_names", default)]
        if len(self.class_names) != self.num_classes:
            raise DataError(f"{p}: {len(self.class_names)} class_names for "
                            f"{self.num_classes} classes")
        self._images, self._labels = images, labels

    def __len__(self):
        return len(self.names)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._file.close()

    @property
    def image_shape(self):
        """(H, W) of every image."""
        return tuple(self._images.shape[1:3])

    def _read(self, dataset, key, index):
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.path}: index {index} out of range 0..{len(self) - 1}")
        try:
            return dataset[index]
        except Exception as err:  # a damaged chunk only shows when it is decompressed
            raise DataError(f"{self.path}: cannot read {key}[{index}] "
                            f"({reason(err)}); the file is corrupt") from None

    def image(self, index):
        """uint8 [H, W, 3] RGB image ``index``."""
        return self._read(self._images, "images", index)

    def label(self, index):
        """uint8 [H, W] label map ``index`` (0..num_classes-1, void_label); DataError otherwise."""
        label = self._read(self._labels, "labels", index)
        # Bad labels must never reach the loss: on CPU the op raises, on GPU it returns NaN.
        bad = (label >= self.num_classes) & (label != self.void_label)
        if bad.any():
            raise DataError(f"{self.path}: labels[{index}] ({self.names[index]}) has value "
                            f"{int(label[bad][0])}, outside 0..{self.num_classes - 1} and not "
                            f"void {self.void_label}")
        return label

    def label_counts(self, indices=None):
        """Pixels per class over ``indices`` (default all), void excluded: int64 [num_classes]."""
        return self.label_statistics(indices)[0]

    def label_statistics(self, indices=None):
        """Class statistics for class balancing, read one label map at a time.

        Returns:
            (counts, presence_pixels): int64 [num_classes] each; ``counts[c]`` =
            pixels of class c; ``presence_pixels[c]`` = non-void pixels of the
            images in which c occurs (Eigen & Fergus' median-frequency denominator).
        """
        counts = np.zeros(self.num_classes, np.int64)
        presence_pixels = np.zeros(self.num_classes, np.int64)
        for per_class in self._pixels_per_class(indices):
            counts += per_class
            presence_pixels[per_class > 0] += per_class.sum()
        return counts, presence_pixels

    def class_presence(self, indices=None):
        """Which classes occur in each image of ``indices`` (default all): bool [n, num_classes]."""
        present = [per_class > 0 for per_class in self._pixels_per_class(indices)]
        return np.array(present, bool).reshape(-1, self.num_classes)

    def _pixels_per_class(self, indices):
        """Yields each image's pixels per class (void excluded), one label map at a time."""
        for i in range(len(self)) if indices is None else indices:
            yield np.bincount(self.label(i).ravel(), minlength=256)[:self.num_classes]

    def split(self, val_fraction):
        """(train, validation) indices of the deterministic split (siftflow.split_train_val).

        The training indices are in file order, the validation ones in name order.
        """
        train_names, val_names = siftflow.split_train_val(self.names, val_fraction)
        return sorted(self.indices_of(train_names)), self.indices_of(val_names)

    def indices_of(self, names):
        """Positions of ``names`` in the file, as a list of int; DataError for unknown names."""
        names = list(names)
        missing = [n for n in names if n not in self._index]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{self.path}: no image named {missing[0]!r}{more}")
        return [self._index[n] for n in names]
