"""The prepared HDF5 file: its layout, and reading it back, validated.

The HDF5 layout, written by fcn_tf1.prepare_data.prepare and checked by :class:`H5Dataset`::

    images      uint8 [N, H, W, 3]   RGB; one gzip chunk per image (H, W: the largest sizes)
    labels      uint8 [N, H, W]      0..C-1, void 255 (fcn_tf1.datasets.VOID)
    names       utf-8 str [N]        e.g. "coast_arnat59"
    sizes       int32 [N, 2]         (height, width) of each image, when they differ; an
                                     image and its label are stored top-left, padded
    validation  uint8 [N]            1 = an image of the dataset's own validation list
                                     (absent: the validation images are carved, see split)
    attrs       class_names (C str), num_classes = C, void_label = 255, source_split,
                dataset (name), descriptor (its JSON), class_colors uint8 [C, 3]

Files written before descriptors existed hold SIFT Flow (33 classes, no
sizes, no validation list) and read as such.

API::

    fingerprint(path)                   "bytes:images:sha256" of what the file holds
    H5Dataset(path)                     validated read-only access (a context manager):
        .names, .class_names, .class_colors, .num_classes, .void_label, .dataset,
        .image_shape (the largest), .uniform, .size(i), len()
        .image(i), .label(i)            one image / label map at its own size, labels checked
        .label_counts(indices), .label_statistics(indices), .class_presence(indices)
        .split(val_fraction)            (train, validation) indices
        .indices_of(names)              positions of names in the file

Batches for training and evaluation are streamed from this file by fcn_tf1.batches.
"""
import hashlib
import pathlib

import h5py
import numpy as np

from fcn_tf1 import datasets, siftflow
from fcn_tf1.errors import DataError, reason

VOID_LABEL = datasets.VOID

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
        self.num_classes = int(f.attrs.get("num_classes", siftflow.NUM_CLASSES))
        self.void_label = int(f.attrs.get("void_label", VOID_LABEL))
        if not 1 <= self.num_classes <= self.void_label <= 255:
            raise DataError(f"{p}: num_classes {self.num_classes} / void_label {self.void_label} "
                            "out of range (need 1 <= num_classes <= void_label <= 255)")
        # a file without a dataset name was written for SIFT Flow, before descriptors
        self.dataset = str(f.attrs.get("dataset", datasets.SIFTFLOW.name))
        names = f.attrs.get("class_names")
        names, colors = datasets.class_set(
            self.num_classes, None if names is None else [
                c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in names],
            f.attrs.get("class_colors"))
        if len(names) != self.num_classes:
            raise DataError(f"{p}: {len(names)} class_names for {self.num_classes} classes")
        if colors.shape != (self.num_classes, 3):
            raise DataError(f"{p}: class_colors is {colors.shape}, expected "
                            f"[{self.num_classes}, 3]")
        self.class_names, self.class_colors = names, colors
        self._sizes = self._optional(f, "sizes", np.integer, (len(images), 2))
        if self._sizes is not None and ((self._sizes < 1).any()
                                        or (self._sizes > images.shape[1:3]).any()):
            raise DataError(f"{p}: sizes outside 1..{images.shape[1]} x 1..{images.shape[2]}")
        self._validation = self._optional(f, "validation", np.integer, (len(images),))
        if self._validation is not None and not np.isin(self._validation, (0, 1)).all():
            raise DataError(f"{p}: validation must hold 0 or 1 per image")
        self._images, self._labels = images, labels

    def _optional(self, f, key, kind, shape):
        """The small dataset ``key`` as a numpy array, None when absent; DataError if malformed."""
        if key not in f:
            return None
        _check_stored_here(f, key, self.path)
        data = f[key]
        if not np.issubdtype(data.dtype, kind) or data.shape != shape:
            raise DataError(f"{self.path}: {key} is {data.dtype} {data.shape}, expected {shape}")
        return data[()]

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
        """(H, W) the images are stored at: every image's size, or the largest ones'."""
        return tuple(self._images.shape[1:3])

    @property
    def uniform(self):
        """Whether every image has the size image_shape."""
        return self._sizes is None or bool((self._sizes == self.image_shape).all())

    def size(self, index):
        """(H, W) of image ``index``."""
        return self.image_shape if self._sizes is None else tuple(int(v) for v in
                                                                 self._sizes[int(index)])

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
        """uint8 [H, W, 3] RGB image ``index``, at its own size."""
        height, width = self.size(index)
        return self._read(self._images, "images", index)[:height, :width]

    def label(self, index):
        """uint8 [H, W] label map ``index`` (0..num_classes-1, void_label); DataError otherwise."""
        height, width = self.size(index)
        label = self._read(self._labels, "labels", index)[:height, :width]
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

    @property
    def has_validation_list(self):
        """Whether the file marks its dataset's own validation images (e.g. CamVid's val)."""
        return self._validation is not None

    def split(self, val_fraction):
        """(train, validation) indices: the dataset's own validation list when the file has
        one, else the deterministic split of ``val_fraction`` (siftflow.split_train_val).

        The training indices are in file order, the validation ones in name order.
        """
        if self._validation is not None:
            val = self.indices_of(sorted(n for n, v in zip(self.names, self._validation) if v))
            return [i for i, v in enumerate(self._validation) if not v], val
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
