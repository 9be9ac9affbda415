"""Streaming batches from a prepared HDF5 file: augmented for training, plain for evaluation.

API:
    BatchStream(path, indices, ...)     endless, augmented, deterministic, resumable batches
    iterate_batches(path, indices, ...) sequential full-resolution batches for evaluation
    iterate_released(root, split, ...)  the same, read from a dataset folder as released
    augment(image, label, rng, ...)     one image's crop / flip / scale, label aligned
    repeat_factors(presence, threshold) how often to show each image (rare classes: more)

Batch order and augmentation depend only on ``(seed, batch index)``: the image
order is the concatenation of per-epoch permutations (epoch ``e`` permuted by a
RNG seeded with ``(seed, 0, e)``), batch ``k`` takes positions ``k*B .. k*B+B-1``
of it, and its crops/flips/scales come from a RNG seeded with ``(seed, 1, k)``.
With repeat factor sampling (``repeat_factor_threshold`` > 0) an epoch is
instead ``len(indices)`` draws with replacement, weighted by
:func:`repeat_factors`, from the RNG seeded with ``(seed, 0, e)``.
So ``BatchStream(..., start_batch=k)`` continues exactly where a run stopped at
step ``k``. Only the images of the current batch are read from the file, so
memory does not grow with the dataset.
"""
import queue
import threading

import numpy as np
from PIL import Image

from fcn_tf1 import layouts
from fcn_tf1.errors import ConfigError
from fcn_tf1.h5data import H5Dataset
from fcn_tf1.datasets import VOID as VOID_LABEL


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


def repeat_factors(presence, threshold):
    """Repeat factor sampling (Gupta et al. 2019, LVIS): oversample images with rare classes.

    Class ``c`` occurring in a fraction ``f_c`` of the images gets
    ``r_c = max(1, sqrt(threshold / f_c))``; an image gets the largest ``r_c``
    of the classes it shows (1 when it shows none). Classes in at least a
    ``threshold`` fraction of the images are not oversampled.

    Args:
        presence: bool [num_images, num_classes], from H5Dataset.class_presence.
        threshold: in (0, 1].

    Returns:
        float64 [num_images], each >= 1.
    """
    presence = np.asarray(presence, bool)
    frequency = presence.mean(axis=0)
    with np.errstate(divide="ignore"):  # absent classes: no image to oversample
        per_class = np.maximum(1.0, np.sqrt(threshold / frequency))
    return np.where(presence, per_class, 1.0).max(axis=1, initial=1.0)


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
        repeat_factor_threshold: 0 (uniform: each epoch a permutation) or a
            threshold in (0, 1]: each epoch draws ``len(indices)`` images with
            replacement, with probability proportional to :func:`repeat_factors`
            of the classes in them (counted over ``indices``).
        prefetch: batches prepared ahead in a thread (0: none, compute on demand).
        start_batch: index of the first batch to yield.

    Yields:
        (images float32 [B, crop, crop, 3] in 0..255, labels int64 [B, crop, crop]).
    """

    def __init__(self, path, indices, batch_size, seed=0, crop_size=None, flip=True,
                 scale_jitter=None, shuffle=True, prefetch=2, start_batch=0,
                 repeat_factor_threshold=0.0):
        if batch_size < 1 or seed < 0 or start_batch < 0 or prefetch < 0:
            raise ConfigError(f"batch_size {batch_size}, seed {seed}, start_batch {start_batch}, "
                              f"prefetch {prefetch}: batch_size must be >= 1, the others >= 0")
        if crop_size is not None and crop_size < 1:
            raise ConfigError(f"crop_size {crop_size}: must be >= 1")
        if scale_jitter is not None and not 0 < scale_jitter[0] <= scale_jitter[1]:
            raise ConfigError(f"scale_jitter {scale_jitter}: need 0 < low <= high")
        if not (repeat_factor_threshold == 0 or 0 < repeat_factor_threshold <= 1):
            raise ConfigError(f"repeat_factor_threshold {repeat_factor_threshold}: must be 0 "
                              "(uniform sampling) or in (0, 1]")
        if repeat_factor_threshold and not shuffle:
            raise ConfigError("repeat_factor_threshold needs shuffle=True (it draws at random)")
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
        # how often to show each of self.indices relative to the others (None: uniform)
        self.repeat_factors = None
        if repeat_factor_threshold:
            try:
                self.repeat_factors = repeat_factors(self._data.class_presence(self.indices),
                                                     repeat_factor_threshold)
            except BaseException:
                self._data.close()
                raise
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

    def epoch_order(self, epoch):
        """The training indices in the order epoch ``epoch`` draws them: a function of
        (seed, epoch) alone, so a resumed stream draws what an uninterrupted one would."""
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng((self.seed, 0, epoch))
        if self.repeat_factors is not None:
            n = len(self.indices)
            draws = rng.choice(n, size=n, p=self.repeat_factors / self.repeat_factors.sum())
            return self.indices[draws]
        return self.indices[rng.permutation(len(self.indices))]

    def batch(self, batch_index):
        """Computes batch ``batch_index`` directly (what the stream yields at that index)."""
        n = len(self.indices)
        positions = np.arange(batch_index * self.batch_size, (batch_index + 1) * self.batch_size)
        orders = {e: self.epoch_order(e) for e in np.unique(positions // n)}
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


def _batched(items, batch_size):
    """Batches of ``batch_size`` from (image, label, name) items, keeping images at their own
    sizes: a batch ends early where the next image has another size."""
    chunk = []
    for item in items:
        if chunk and (len(chunk) == batch_size or item[1].shape != chunk[0][1].shape):
            yield _stacked(chunk)
            chunk = []
        chunk.append(item)
    if chunk:
        yield _stacked(chunk)


def _stacked(chunk):
    images, labels, names = zip(*chunk)
    return (np.stack(images).astype(np.float32), np.stack(labels).astype(np.int64),
            list(names))


def iterate_batches(path, indices=None, batch_size=1):
    """Sequential full-resolution batches without augmentation (for evaluation).

    Each image keeps its own size; a batch holds images of one size (so a file of
    mixed sizes yields smaller batches where the size changes).

    Args:
        path: HDF5 file from prepare_data.prepare.
        indices: positions to read, in this order (None: all).
        batch_size: images per batch (the last one may be smaller).

    Yields:
        (images float32 [b, H, W, 3] in 0..255, labels int64 [b, H, W], names list of str).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size}: must be >= 1")
    with H5Dataset(path) as data:
        indices = list(range(len(data))) if indices is None else [int(i) for i in indices]
        yield from _batched(((data.image(i), data.label(i), data.names[i]) for i in indices),
                            batch_size)


def iterate_released(root, split=None, names_file=None, batch_size=1, only=None):
    """Like :func:`iterate_batches`, straight from a dataset folder as released (no HDF5;
    its layout detected by fcn_tf1.layouts).

    Every listed file is checked to exist first; a bad image or label map
    raises DataError naming it. ``only``: keep just these names of the list.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size}: must be >= 1")
    descriptor = layouts.descriptor_for(root)
    listing = layouts.list_pairs(root, descriptor, split, names_file)
    keep = None if only is None else set(only)
    pairs = [(name, pair) for name, pair in zip(listing.names, listing.pairs)
             if keep is None or name in keep]
    yield from _batched(((*layouts.read_pair(descriptor, *pair), name) for name, pair in pairs),
                        batch_size)
