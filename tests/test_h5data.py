"""prepare -> HDF5 -> batches: round trip on real images, augmentation, determinism, resume."""
import hashlib
import threading
from collections import Counter

import h5py
import numpy as np
import pytest

from fcn_tf1 import batches, h5data, prepare_data, siftflow
from fcn_tf1.errors import ConfigError, DataError


def _names_per_category(root, per_category):
    """The first ``per_category`` names of each category of trainval.txt."""
    seen, names = Counter(), []
    for name in siftflow.read_names(root / "trainval.txt"):
        seen[siftflow.category_of(name)] += 1
        if seen[siftflow.category_of(name)] <= per_category:
            names.append(name)
    return names


@pytest.fixture(scope="module")
def real_h5(siftflow_root, tmp_path_factory):
    """8 real trainval images (one per category) prepared in-process."""
    tmp = tmp_path_factory.mktemp("real")
    names_file = tmp / "names.txt"
    names_file.write_text("\n".join(_names_per_category(siftflow_root, 1)) + "\n")
    out = tmp / "real.h5"
    summary = prepare_data.prepare(siftflow_root, out, names_file=names_file, workers=1, progress=False)
    assert summary["num_images"] == 8 and summary["path"] == str(out)
    assert 0 < summary["void_fraction"] < 1
    return out


def write_h5(path, images, labels, names=None, num_classes=33):
    """A synthetic file in the prepared layout."""
    names = names or [f"coast_s{i}" for i in range(len(images))]
    with h5py.File(path, "w") as f:
        f["images"], f["labels"] = images, labels
        f.create_dataset("names", data=names, dtype=h5py.string_dtype("utf-8"))
        f.attrs["num_classes"], f.attrs["void_label"] = num_classes, 255
    return path


def palette(labels):
    """The colour that encodes each label: uint8 [..., 3], distinct for 0..32."""
    labels = labels.astype(np.int64)
    return np.stack([labels * 7, 255 - labels * 7, (labels * 37) % 256], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def coded_h5(tmp_path_factory):
    """10 synthetic 256x256 images of 16x16 label blocks whose colour encodes the label."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 34, size=(10, 16, 16))  # 33 -> void
    labels = np.where(blocks == 33, 255, blocks).repeat(16, 1).repeat(16, 2).astype(np.uint8)
    images = palette(labels)
    images[labels == 255] = (1, 2, 3)
    return write_h5(tmp_path_factory.mktemp("coded") / "coded.h5", images, labels)


def test_prepare_round_trip_is_bit_exact(real_h5, siftflow_root):
    sums = {line.split()[1][:-4]: line.split()[3]
            for line in (siftflow_root / "SHA256SUMS-trainval").read_text().splitlines()}
    with h5data.H5Dataset(real_h5) as data:
        assert data.names == _names_per_category(siftflow_root, 1)
        assert data.class_names == list(siftflow.CLASS_NAMES)
        assert (data.num_classes, data.void_label, len(data)) == (33, 255, 8)
        for i, name in enumerate(data.names):
            np.testing.assert_array_equal(
                data.image(i), siftflow.read_image(siftflow.image_path(siftflow_root, name)))
            np.testing.assert_array_equal(
                data.label(i), siftflow.read_label(siftflow.label_path(siftflow_root, name)))
            raw = np.where(data.label(i) == 255, 0, data.label(i).astype(np.int16) + 1)
            assert hashlib.sha256(raw.astype(np.uint8).tobytes()).hexdigest() == sums[name]
    with h5py.File(real_h5, "r") as f:
        assert f["images"].chunks == (1, 256, 256, 3) and f["labels"].chunks == (1, 256, 256)
        assert f["images"].compression == "gzip" and f["labels"].dtype == np.uint8
        assert f.attrs["source_split"].endswith("names.txt")


def test_prepare_parallel_limit_per_category(siftflow_root, real_h5, tmp_path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(_names_per_category(siftflow_root, 2)) + "\n")
    out = tmp_path / "sub" / "parallel.h5"
    summary = prepare_data.prepare(siftflow_root, out, names_file=names_file, limit_per_category=1,
                             workers=2, progress=False)
    assert summary["per_category"] == {c: 1 for c in siftflow.CATEGORIES}
    with h5data.H5Dataset(out) as parallel, h5data.H5Dataset(real_h5) as serial:
        assert parallel.names == serial.names
        for i in range(len(serial)):
            assert (parallel.image(i) == serial.image(i)).all()
            assert (parallel.label(i) == serial.label(i)).all()
    assert sorted(p.name for p in out.parent.iterdir()) == ["parallel.h5"]


def test_prepare_failure_leaves_existing_output_untouched(siftflow_root, tmp_path, monkeypatch):
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(_names_per_category(siftflow_root, 1)) + "\n")
    out = tmp_path / "out" / "data.h5"
    out.parent.mkdir()
    out.write_bytes(b"previous")
    calls, read_image = [], siftflow.read_image

    def interrupted(path):  # Ctrl-C while the third image is decoded
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return read_image(path)

    monkeypatch.setattr(siftflow, "read_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_data.prepare(siftflow_root, out, names_file=names_file, workers=1, progress=False,
                       overwrite=True)
    assert out.read_bytes() == b"previous" and len(calls) == 3
    assert [p.name for p in out.parent.iterdir()] == ["data.h5"]  # no temporary file left


def test_label_counts_and_indices(real_h5):
    with h5data.H5Dataset(real_h5) as data:
        labels = np.stack([data.label(i) for i in range(len(data))])
        expected = np.bincount(labels[labels != 255].ravel(), minlength=33)
        np.testing.assert_array_equal(data.label_counts(), expected)
        assert data.label_counts().dtype == np.int64
        subset = data.indices_of([data.names[5], data.names[2]])
        assert subset == [5, 2]
        np.testing.assert_array_equal(
            data.label_counts(subset),
            np.bincount(labels[[5, 2]][labels[[5, 2]] != 255], minlength=33))
        with pytest.raises(DataError, match="no image named 'coast_nothing'"):
            data.indices_of(["coast_nothing"])


@pytest.mark.parametrize("crop_size, scale_jitter", [
    (None, None), (200, None), (300, None), (224, (0.5, 1.5))])
def test_augmentation_keeps_image_and_label_aligned(coded_h5, crop_size, scale_jitter):
    with batches.BatchStream(coded_h5, None, 5, seed=1, crop_size=crop_size,
                            scale_jitter=scale_jitter) as stream:
        for _ in range(4):
            images, labels = next(stream)
            side = crop_size or 256
            assert images.shape == (5, side, side, 3) and images.dtype == np.float32
            assert labels.shape == (5, side, side) and labels.dtype == np.int64
            assert 0 <= images.min() and images.max() <= 255
            valid = labels != 255
            if scale_jitter is None:  # pure crops/flips: every labelled pixel keeps its colour
                assert (images[valid] == palette(labels[valid])).all()
            else:  # bilinear mixes colours at block edges: check pixels inside uniform 5x5 areas
                pad = np.pad(labels, ((0, 0), (2, 2), (2, 2)), constant_values=255)
                uniform = valid.copy()
                for dy in range(5):
                    for dx in range(5):
                        uniform &= pad[:, dy:dy + side, dx:dx + side] == labels
                assert uniform.mean() > 0.3
                assert (np.abs(images[uniform] - palette(labels[uniform])) <= 1).all()


def test_flip_happens_about_half_the_time(coded_h5):
    with h5data.H5Dataset(coded_h5) as data:
        originals = [data.label(i) for i in range(len(data))]
    with batches.BatchStream(coded_h5, None, 10, shuffle=False, prefetch=0) as stream:
        _, labels = next(stream)
    flipped = [bool((labels[i] == originals[i][:, ::-1]).all()) for i in range(10)]
    kept = [bool((labels[i] == originals[i]).all()) for i in range(10)]
    assert all(f != k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < 10


def _take(stream, count):
    return [next(stream) for _ in range(count)]


def test_batches_are_deterministic_and_resumable(coded_h5):
    options = dict(crop_size=160, scale_jitter=(0.75, 1.25))
    indices = [0, 2, 3, 5, 6, 7, 9]  # 7 images, batches of 3: batches straddle epochs
    with batches.BatchStream(coded_h5, indices, 3, seed=5, **options) as stream:
        run = _take(stream, 8)
        assert stream.next_batch == 8 and stream.epoch_of(7) == 3
    with batches.BatchStream(coded_h5, indices, 3, seed=5, prefetch=0, **options) as stream:
        again = _take(stream, 8)
    with batches.BatchStream(coded_h5, indices, 3, seed=5, start_batch=5, **options) as stream:
        resumed = _take(stream, 3)
    with batches.BatchStream(coded_h5, indices, 3, seed=6, **options) as stream:
        other = _take(stream, 8)
    for a, b in zip(run, again):
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    for a, b in zip(run[5:], resumed):
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert any((a[1] != b[1]).any() for a, b in zip(run, other))


def test_each_epoch_is_a_permutation_of_the_indices(coded_h5):
    with h5data.H5Dataset(coded_h5) as data:
        keys = {data.label(i).tobytes(): i for i in range(len(data))}
    indices = [1, 3, 4, 8]
    with batches.BatchStream(coded_h5, indices, 2, flip=False, seed=2) as stream:
        order = [keys[lab.astype(np.uint8).tobytes()] for _ in range(6) for lab in next(stream)[1]]
    epochs = [order[0:4], order[4:8], order[8:12]]
    assert all(sorted(epoch) == indices for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1
    with batches.BatchStream(coded_h5, indices, 3, flip=False, shuffle=False) as stream:
        order = [keys[lab.astype(np.uint8).tobytes()] for _ in range(2) for lab in next(stream)[1]]
    assert order == [1, 3, 4, 8, 1, 3]


def test_repeat_factors_follow_the_lvis_rule():
    # class 0 in all 4 images, class 1 in one (f = 1/4), class 2 in two (f = 1/2), class 3 in none
    presence = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 0], [1, 0, 0, 0]], bool)
    np.testing.assert_allclose(batches.repeat_factors(presence, 1.0), [2, 2 ** 0.5, 2 ** 0.5, 1])
    np.testing.assert_allclose(batches.repeat_factors(presence, 0.5), [2 ** 0.5, 1, 1, 1])
    np.testing.assert_allclose(batches.repeat_factors(presence, 0.25), [1, 1, 1, 1])
    assert batches.repeat_factors(np.zeros((3, 4), bool), 0.5).tolist() == [1, 1, 1]


def test_repeat_factor_sampling_draws_rare_images_more_and_resumes(tmp_path):
    # image 0 alone shows class 2 (f = 0.1): threshold 0.5 gives it sqrt(5) = 2.24, the others 1
    labels = np.ones((10, 32, 32), np.uint8)
    labels[0, :4, :4] = 2
    images = palette(labels)
    images[:, 0, -1, 0] = np.arange(10)  # a pixel that tells the images apart
    path = write_h5(tmp_path / "rare.h5", images, labels)
    indices = list(range(10))
    options = dict(flip=False, seed=3, repeat_factor_threshold=0.5)
    with batches.BatchStream(path, indices, 5, prefetch=0, **options) as stream:
        np.testing.assert_allclose(stream.repeat_factors, [5 ** 0.5] + [1] * 9)
        run = _take(stream, 60)
    drawn = Counter(int(image[0, -1, 0]) for images_, _ in run for image in images_)
    # 300 draws with p = 0.199 for image 0 and 0.089 for each other image
    assert 45 <= drawn[0] <= 75 and max(drawn[i] for i in range(1, 10)) < drawn[0]
    assert sum(drawn.values()) == 300 and set(drawn) == set(indices)
    with batches.BatchStream(path, indices, 5, start_batch=50, **options) as stream:
        resumed = _take(stream, 10)
    for a, b in zip(run[50:], resumed):
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    with batches.BatchStream(path, indices, 5, prefetch=0, flip=False, seed=3) as stream:
        uniform = Counter(int(image[0, -1, 0]) for _ in range(60) for image in next(stream)[0])
    assert set(uniform.values()) == {30}  # without it: every image once per epoch
    with pytest.raises(ConfigError, match="repeat_factor_threshold"):
        batches.BatchStream(path, indices, 5, repeat_factor_threshold=2.0)
    with pytest.raises(ConfigError, match="shuffle"):
        batches.BatchStream(path, indices, 5, shuffle=False, repeat_factor_threshold=0.5)


def test_thread_error_reaches_consumer_and_close_stops_thread(tmp_path):
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[2, 5, 5] = 40  # out of range: detected when image 2 is read
    path = write_h5(tmp_path / "bad.h5", np.zeros((4, 32, 32, 3), np.uint8), labels)
    stream = batches.BatchStream(path, None, 1, shuffle=False)
    next(stream), next(stream)
    with pytest.raises(DataError, match=r"labels\[2\] \(coast_s2\) has value 40"):
        next(stream)
    stream.close()
    assert not any(t.name == "BatchStream-prefetch" for t in threading.enumerate())
    with pytest.raises(ValueError):
        next(stream)
    stream = batches.BatchStream(path, [0, 1], 1)
    next(stream)
    stream.close()  # the producer blocks on a full queue: close must still return
    assert not stream._thread.is_alive()


def test_iterate_batches(real_h5):
    with h5data.H5Dataset(real_h5) as data:
        expected_names = [data.names[i] for i in (6, 0, 3)]
        got = list(batches.iterate_batches(real_h5, [6, 0, 3], 2))
        assert [len(b[2]) for b in got] == [2, 1]
        assert got[0][2] + got[1][2] == expected_names
        images, labels, _ = got[0]
        assert images.dtype == np.float32 and images.shape == (2, 256, 256, 3)
        assert labels.dtype == np.int64 and labels.shape == (2, 256, 256)
        assert (images[1] == data.image(0)).all() and (labels[0] == data.label(6)).all()


def test_embedded_sample(default_data):
    assert default_data.stat().st_size <= 8 * 2**20
    with h5data.H5Dataset(default_data) as data:
        assert len(data) == 56
        assert Counter(map(siftflow.category_of, data.names)) == {c: 7 for c in siftflow.CATEGORIES}
        assert data.label_counts().sum() < len(data) * 256 * 256  # void pixels present
        train, val = siftflow.split_train_val(data.names)
    listed = [(default_data.parent / f"siftflow_sample_{part}.txt").read_text().split()
              for part in ("train", "val")]
    assert listed == [train, val] and len(val) == 8


def test_label_statistics_for_median_frequency(tmp_path):
    import h5py
    path = tmp_path / "stats.h5"
    labels = np.full((2, 4, 4), 255, np.uint8)
    labels[0, :2] = 0       # image 0: 8 px of class 0, 8 void
    labels[1, :] = 1        # image 1: 12 px of class 1, 4 px of class 0
    labels[1, 0] = 0
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 4, 4, 3), np.uint8)
        f["labels"] = labels
        f["names"] = np.array([b"coast_a", b"forest_b"], dtype=h5py.string_dtype())
        f.attrs["class_names"] = np.array(siftflow.CLASS_NAMES, dtype=h5py.string_dtype())
        f.attrs["num_classes"] = 33
        f.attrs["void_label"] = 255
        f.attrs["source_split"] = "test"
    with h5data.H5Dataset(path) as data:
        counts, presence = data.label_statistics()
        assert counts[:3].tolist() == [12, 12, 0]
        assert presence[:3].tolist() == [8 + 16, 16, 0]
        assert data.label_counts([1])[:2].tolist() == [4, 12]
