"""Prepare: a dataset's files -> one HDF5 file (the layout in fcn_tf1.h5data), atomically.

API::

    prepare(data_dir, out_path, split=None, ..., descriptor=None, overwrite=False) -> summary

The listing and the decoding of each pair are fcn_tf1.layouts'; what the file
holds, and reading it back, fcn_tf1.h5data's.
"""
import contextlib
import glob
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

from fcn_tf1 import datasets, layouts, rundir, siftflow
from fcn_tf1.decoders import image_size
from fcn_tf1.errors import ConfigError, DataError, reason

VOID_LABEL = datasets.VOID

# Measured on SIFT Flow: images (natural photos) shrink to ~70% at any level; level 4 keeps
# label maps at ~1.5 KB for little time, higher levels only cost time.
GZIP_LEVEL = 4


def _encode_one(task):
    """Decodes one image/label pair, pads it to the stored size and deflates each (runs in a
    worker process).

    Returns:
        (image chunk bytes, label chunk bytes, number of void pixels).
    """
    descriptor, image_file, label_file, (height, width) = task
    image, label = layouts.read_pair(descriptor, image_file, label_file)
    void = int(np.count_nonzero(label == VOID_LABEL))
    if label.shape != (height, width):  # stored top-left in the chunk of the largest size
        image = np.pad(image, ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)))
        label = np.pad(label, ((0, height - label.shape[0]), (0, width - label.shape[1])),
                       constant_values=VOID_LABEL)
    # zlib.compress output is exactly what HDF5's gzip (deflate) filter stores, so the
    # chunks can be written directly and compression runs on every core, not only the parent.
    return (zlib.compress(image.tobytes(), GZIP_LEVEL), zlib.compress(label.tobytes(), GZIP_LEVEL),
            void)


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


def _write(part, listing, sizes, descriptor, class_names, workers, progress):
    """Writes the whole HDF5 file at ``part``; returns the number of void pixels."""
    n, (height, width) = len(listing.names), tuple(np.max(sizes, axis=0))
    tasks = [(descriptor, image, label, (height, width)) for image, label in listing.pairs]
    gzip = dict(compression="gzip", compression_opts=GZIP_LEVEL)
    void_pixels = 0
    with h5py.File(part, "x") as out:
        images = out.create_dataset("images", (n, height, width, 3), np.uint8,
                                    chunks=(1, height, width, 3), **gzip)
        labels = out.create_dataset("labels", (n, height, width), np.uint8,
                                    chunks=(1, height, width), **gzip)
        out.create_dataset("names", data=listing.names, dtype=h5py.string_dtype("utf-8"))
        if (sizes != (height, width)).any():
            out.create_dataset("sizes", data=np.asarray(sizes, np.int32))
        if listing.validation is not None:
            out.create_dataset("validation", data=np.asarray(listing.validation, np.uint8))
        out.attrs["class_names"] = np.array(class_names, dtype=h5py.string_dtype("utf-8"))
        out.attrs["num_classes"] = descriptor.num_classes
        out.attrs["void_label"] = VOID_LABEL
        out.attrs["source_split"] = listing.source
        if descriptor is not datasets.SIFTFLOW:  # SIFT Flow files stay as they always were
            out.attrs["dataset"] = descriptor.name
            out.attrs["descriptor"] = descriptor.to_json()
            out.attrs["class_colors"] = descriptor.palette()
        with _encoded(tasks, workers) as results, tqdm(
                total=n, desc="prepare", unit="img", file=sys.stderr, disable=not progress) as bar:
            for i, (image_chunk, label_chunk, void_count) in enumerate(results):
                images.id.write_direct_chunk((i, 0, 0, 0), image_chunk)
                labels.id.write_direct_chunk((i, 0, 0), label_chunk)
                void_pixels += void_count
                bar.update()
    return void_pixels


def _sizes(listing, descriptor):
    """int [N, 2] (height, width) of every image, from the headers (SIFT Flow: all 256)."""
    if descriptor.layout == "siftflow":
        return np.full((len(listing.names), 2), siftflow.IMAGE_SIZE)
    return np.array([image_size(image)[::-1] for image, _ in listing.pairs])


def prepare(data_dir, out_path, split=None, names_file=None, limit_per_category=None,
            workers=None, progress=True, overwrite=False, descriptor=None, pairs_file=None,
            images=None, labels=None):
    """Converts a dataset's files into one HDF5 file, atomically.

    Every listed image must have its label file (checked before any decoding).
    Images keep their own size (no resizing). The file is written to a
    temporary name in the output directory and renamed at the end; on any
    error or interrupt the temporary file is removed and a file already at
    ``out_path`` is left untouched. An existing ``out_path`` is replaced only
    with ``overwrite``.

    Args:
        data_dir: the dataset root (a layout of fcn_tf1.layouts), or None with
            ``images``/``labels`` or ``pairs_file``.
        out_path: the HDF5 file to write (parent directories are created).
        split: split name (SIFT Flow: ``ROOT/SPLIT.txt``, default trainval; list
            layouts: default "train+val").
        names_file: any file of names instead of ``split``.
        limit_per_category: keep only the first K names of each category (name prefix).
        workers: decoding processes (default: the usable cores; 1 = in-process).
        progress: show a tqdm bar on stderr.
        overwrite: replace a file already at ``out_path`` (else DataError).
        descriptor: a datasets.Descriptor (default: the built-in one of the
            detected layout of ``data_dir``).
        pairs_file, images, labels: a user's own folders (layouts.list_pairs).

    Returns:
        dict with path, dataset, num_images, num_validation, per_category (dict),
        void_fraction, file_bytes, seconds, source_split, sizes (distinct (H, W)).

    Raises:
        DataError: missing directory, list or file; any bad image or label map.
        ConfigError: contradictory or out-of-range arguments.
    """
    start = time.perf_counter()
    if split is not None and names_file is not None:
        raise ConfigError("give either a split or a names file, not both")
    if descriptor is None:
        descriptor = layouts.descriptor_for(data_dir)
    listing = layouts.list_pairs(data_dir, descriptor, split, names_file, pairs_file, images,
                                 labels, limit_per_category)
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
    class_names = (siftflow.read_class_names(data_dir) if descriptor is datasets.SIFTFLOW
                   else list(descriptor.class_names))
    sizes = _sizes(listing, descriptor)
    part = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_parts(out)
        void_pixels = _write(part, listing, sizes, descriptor, class_names, workers, progress)
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
    return {"path": str(out), "dataset": descriptor.name, "num_images": len(listing.names),
            "num_validation": sum(listing.validation or ()), "source_split": listing.source,
            "per_category": dict(Counter(siftflow.category_of(n) for n in listing.names)),
            "void_fraction": void_pixels / int(np.prod(sizes, axis=1).sum()),
            "sizes": sorted({tuple(int(v) for v in hw) for hw in sizes}),
            "file_bytes": out.stat().st_size, "seconds": time.perf_counter() - start}


def _remove_dead_parts(out):
    """Deletes the temporary files of earlier prepares of ``out`` whose process is gone
    (a SIGKILL leaves one as large as the output); a running prepare's is kept."""
    for part in out.parent.glob(f".{glob.escape(out.name)}.*-*.part"):
        pid = part.name[len(out.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not rundir.pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                part.unlink()


