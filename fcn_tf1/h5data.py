"""Prepare (released files -> one HDF5 file, atomically) and stream batches from it.

The HDF5 layout, written by :func:`prepare` and checked by :class:`H5Dataset`::

    images   uint8 [N, 256, 256, 3]   RGB; one gzip chunk per image
    labels   uint8 [N, 256, 256]      0..32, void 255 (the contract in fcn_tf1.siftflow)
    names    utf-8 str [N]            e.g. "coast_arnat59"
    attrs    class_names (33 str), num_classes = 33, void_label = 255,
             source_split (split name or names-file path)

API:
    prepare(data_dir, out_path, ...) -> summary dict
    H5Dataset(path)                     validated read-only access, one image at a time
    BatchStream(path, indices, ...)     endless, augmented, deterministic, resumable batches
    iterate_batches(path, indices, ...) sequential full-resolution batches for evaluation

Batch order and augmentation depend only on ``(seed, batch index)``: the image
order is the concatenation of per-epoch permutations (epoch ``e`` permuted by a
RNG seeded with ``(seed, 0, e)``), batch ``k`` takes positions ``k*B .. k*B+B-1``
of it, and its crops/flips/scales come from a RNG seeded with ``(seed, 1, k)``.
So ``BatchStream(..., start_batch=k)`` continues exactly where a run stopped at
step ``k``.
"""
import contextlib
import os
import pathlib
import queue
import secrets
import signal
import sys
import threading
import time
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
from PIL import Image
from tqdm import tqdm

from fcn_tf1 import siftflow
from fcn_tf1.errors import ConfigError, DataError
from fcn_tf1.siftflow import IMAGE_SIZE, NUM_CLASSES, VOID_LABEL, _reason

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
            workers=None, progress=True):
    """Converts the released SIFT Flow layout into one HDF5 file, atomically.

    Every listed name must have its image and label file (checked before any
    decoding). The file is written to a temporary name in the output directory
    and renamed at the end; on any error or interrupt the temporary file is
    removed and a file already at ``out_path`` is left untouched.

    Args:
        data_dir: SIFT Flow root (Images/, SemanticLabels/, SPLIT.txt).
        out_path: the HDF5 file to write (parent directories are created).
        split: split name, reads ``data_dir/SPLIT.txt`` (default "trainval").
        names_file: any file of names instead of ``split``.
        limit_per_category: keep only the first K names of each scene category.
        workers: decoding processes (default: the usable cores; 1 = in-process).
        progress: show a tqdm bar on stderr.

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
        raise ConfigError(f"--workers {workers}: must be >= 1")
    if out.is_dir():
        raise DataError(f"{out}: is a directory, expected an HDF5 file name")
    class_names = siftflow.read_class_names(data_dir)
    part = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        void_pixels = _write(part, names, tasks, class_names, source, workers, progress)
        os.replace(part, out)
    except BaseException as err:
        with contextlib.suppress(OSError):
            part.unlink()
        if isinstance(err, OSError):  # bad inputs arrive as DataError: this is the output side
            raise DataError(f"{out}: cannot write ({_reason(err)})") from None
        raise
    return {"path": str(out), "num_images": len(names), "source_split": source,
            "per_category": dict(Counter(siftflow.category_of(n) for n in names)),
            "void_fraction": void_pixels / (len(names) * IMAGE_SIZE * IMAGE_SIZE),
            "file_bytes": out.stat().st_size, "seconds": time.perf_counter() - start}


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
            raise DataError(f"{self.path}: not a readable HDF5 file ({_reason(err)})") from None
        try:
            self._validate()
        except BaseException as err:
            self._file.close()
            if isinstance(err, Exception) and not isinstance(err, DataError):
                raise DataError(f"{self.path}: corrupt HDF5 file ({_reason(err)})") from None
            raise

    def _validate(self):
        f, p = self._file, self.path
        for key in ("images", "labels", "names"):
            if not isinstance(f.get(key), h5py.Dataset):
                raise DataError(f"{p}: no dataset '{key}' (not a file made by `fcn-tf1 prepare`)")
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
                            f"({_reason(err)}); the file is corrupt") from None

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
        counts = np.zeros(self.num_classes, np.int64)
        for i in range(len(self)) if indices is None else indices:
            counts += np.bincount(self.label(i).ravel(), minlength=256)[:self.num_classes]
        return counts

    def indices_of(self, names):
        """Positions of ``names`` in the file, as a list of int; DataError for unknown names."""
        names = list(names)
        missing = [n for n in names if n not in self._index]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{self.path}: no image named {missing[0]!r}{more}")
        return [self._index[n] for n in names]


def _window(array, top, left, height, width, fill):
    """The [top:top+height, left:left+width] window of ``array``, ``fill`` outside it."""
    out = np.empty((height, width) + array.shape[2:], array.dtype)
    out[...] = fill
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, array.shape[0]), min(left + width, array.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = array[y0:y1, x0:x1]
    return out


def augment(image, label, rng, crop_size, flip, scale_jitter, void_label=VOID_LABEL):
    """Applies one random scale/crop/flip to an image and its label map identically.

    The image is resized bilinearly and the label nearest-neighbour (Pillow's
    resamplers share the pixel-centre convention, so they stay aligned). Where
    the crop window leaves the scaled image, the label is void and the image the
    image's mean colour (neutral input, ignored by the loss).

    Args:
        image: uint8 [H, W, 3].
        label: uint8 [H, W].
        rng: numpy Generator; draws scale, then crop offsets, then the flip.
        crop_size: (height, width) of the output.
        flip: mirror left-right with probability 0.5.
        scale_jitter: None or (low, high) scale range.
        void_label: the label fill value.

    Returns:
        (uint8 [crop_h, crop_w, 3], uint8 [crop_h, crop_w]).
    """
    if scale_jitter is not None:
        scale = rng.uniform(scale_jitter[0], scale_jitter[1])
        height = max(1, int(round(image.shape[0] * scale)))
        width = max(1, int(round(image.shape[1] * scale)))
        if (height, width) != label.shape:
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
            label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    (crop_h, crop_w), (height, width) = crop_size, label.shape
    # Offsets range over every placement of the window: inside the image when it is
    # larger than the crop, around it (padding on any side) when it is smaller.
    top = int(rng.integers(min(0, height - crop_h), max(0, height - crop_h) + 1))
    left = int(rng.integers(min(0, width - crop_w), max(0, width - crop_w) + 1))
    mean_colour = np.round(image.reshape(-1, 3).mean(axis=0)).astype(np.uint8)
    image = _window(image, top, left, crop_h, crop_w, mean_colour)
    label = _window(label, top, left, crop_h, crop_w, void_label)
    if flip and rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label


class _Failure:
    """Carries an exception from the prefetch thread to the consumer."""

    def __init__(self, error):
        self.error = error


class BatchStream:
    """Endless, augmented, deterministic and resumable training batches (an iterator).

    Batch ``k`` depends only on ``(seed, k)`` (see the module docstring), so
    ``start_batch=k`` yields exactly batches ``k, k+1, ...`` of an uninterrupted
    stream. Only the images of the current batch are read from the file, and a
    background thread keeps up to ``prefetch`` batches ready. Use as a context
    manager (or call ``close()``) to stop the thread; an error in the thread is
    raised by ``next()``.

    Args:
        path: HDF5 file from :func:`prepare`.
        indices: positions of the images to draw from (None: all).
        batch_size: images per batch.
        seed: non-negative int.
        crop_size: int side of the random square crop; None = full image size.
        flip: random horizontal flip with p = 0.5.
        scale_jitter: None or (low, high), e.g. (0.75, 1.25).
        shuffle: permute each epoch (False: file order, every epoch).
        prefetch: batches prepared ahead in a thread (0: none, compute on demand).
        start_batch: index of the first batch to yield.

    Yields:
        (images float32 [B, crop, crop, 3] in 0..255, labels int64 [B, crop, crop]).
    """

    def __init__(self, path, indices, batch_size, seed=0, crop_size=None, flip=True,
                 scale_jitter=None, shuffle=True, prefetch=2, start_batch=0):
        if batch_size < 1 or seed < 0 or start_batch < 0 or prefetch < 0:
            raise ConfigError(f"batch_size {batch_size}, seed {seed}, start_batch {start_batch}, "
                              f"prefetch {prefetch}: batch_size must be >= 1, the others >= 0")
        if crop_size is not None and crop_size < 1:
            raise ConfigError(f"crop_size {crop_size}: must be >= 1")
        if scale_jitter is not None and not 0 < scale_jitter[0] <= scale_jitter[1]:
            raise ConfigError(f"scale_jitter {scale_jitter}: need 0 < low <= high")
        self._data = H5Dataset(path)
        self.indices = np.arange(len(self._data)) if indices is None else np.asarray(indices, int)
        if self.indices.ndim != 1 or len(self.indices) == 0 or self.indices.min() < 0 \
                or self.indices.max() >= len(self._data):
            self._data.close()
            raise ConfigError(f"{path}: indices must be a non-empty list within "
                              f"0..{len(self._data) - 1}")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.flip, self.scale_jitter = flip, scale_jitter
        self.crop_size = self._data.image_shape if crop_size is None else (crop_size, crop_size)
        self.next_batch = start_batch  # the index of the batch next() returns
        self._closed, self._failure = False, None
        self._stop, self._thread = threading.Event(), None
        if prefetch:
            self._queue = queue.Queue(maxsize=prefetch)
            self._thread = threading.Thread(target=self._produce, args=(start_batch,),
                                            name="BatchStream-prefetch", daemon=True)
            self._thread.start()

    def epoch_of(self, batch_index):
        """The epoch that batch ``batch_index`` starts in."""
        return batch_index * self.batch_size // len(self.indices)

    def _epoch_order(self, epoch):
        if not self.shuffle:
            return self.indices
        permutation = np.random.default_rng((self.seed, 0, epoch)).permutation(len(self.indices))
        return self.indices[permutation]

    def batch(self, batch_index):
        """Computes batch ``batch_index`` directly (what the stream yields at that index)."""
        n = len(self.indices)
        positions = np.arange(batch_index * self.batch_size, (batch_index + 1) * self.batch_size)
        orders = {e: self._epoch_order(e) for e in np.unique(positions // n)}
        rng = np.random.default_rng((self.seed, 1, batch_index))
        images, labels = [], []
        for position in positions:
            index = orders[position // n][position % n]
            image, label = augment(self._data.image(index), self._data.label(index), rng,
                                   self.crop_size, self.flip, self.scale_jitter,
                                   self._data.void_label)
            images.append(image)
            labels.append(label)
        return np.stack(images).astype(np.float32), np.stack(labels).astype(np.int64)

    def _produce(self, batch_index):
        try:
            while not self._stop.is_set():
                self._put((batch_index, self.batch(batch_index)))
                batch_index += 1
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(_Failure(err))

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise ValueError("BatchStream is closed")
        if self._failure is not None:
            raise self._failure
        if self._thread is None:
            item = (self.next_batch, self.batch(self.next_batch))
        else:
            item = self._queue.get()
        if isinstance(item, _Failure):
            self._failure = item.error
            raise item.error
        self.next_batch += 1
        return item[1]

    def close(self):
        """Stops the prefetch thread and closes the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._data.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iterate_batches(path, indices=None, batch_size=1):
    """Sequential full-resolution batches without augmentation (for evaluation).

    Args:
        path: HDF5 file from :func:`prepare`.
        indices: positions to read, in this order (None: all).
        batch_size: images per batch (the last one may be smaller).

    Yields:
        (images float32 [b, H, W, 3] in 0..255, labels int64 [b, H, W], names list of str).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size}: must be >= 1")
    with H5Dataset(path) as data:
        indices = list(range(len(data))) if indices is None else [int(i) for i in indices]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            images = np.stack([data.image(i) for i in chunk]).astype(np.float32)
            labels = np.stack([data.label(i) for i in chunk]).astype(np.int64)
            yield images, labels, [data.names[i] for i in chunk]
