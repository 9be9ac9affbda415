"""The label contract, the readers of the released layout, and the validation split."""
import hashlib
import random
from collections import Counter

import numpy as np
import pytest
import scipy.io

from fcn_tf1 import datasets, h5data, siftflow
from fcn_tf1.errors import ConfigError, DataError


def _sha256_sums(root):
    """{name: (sha256 of the JPEG file, sha256 of S as uint8 in C order)}."""
    sums = {}
    for line in (root / "SHA256SUMS-trainval").read_text().splitlines():
        jpg_hash, jpg_name, _, label_hash = line.split()
        sums[jpg_name[:-len(".jpg")]] = (jpg_hash, label_hash)
    return sums


def test_label_contract_maps_void_to_255_and_shifts_classes():
    s = np.zeros((256, 256))
    s[0, :34] = np.arange(34)
    labels = siftflow.labels_from_class_map(s, "x.mat")
    assert labels.dtype == np.uint8 and labels.shape == (256, 256)
    assert labels[0, 0] == siftflow.VOID_LABEL == 255
    np.testing.assert_array_equal(labels[0, 1:34], np.arange(33))
    assert (labels[1:] == 255).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_label_contract_accepts_integer_valued_numeric_dtypes(dtype):
    s = (np.arange(256 * 256) % 34).reshape(256, 256).astype(dtype)
    expected = np.where(s == 0, 255, s.astype(int) - 1)
    np.testing.assert_array_equal(siftflow.labels_from_class_map(s, "x.mat"), expected)


@pytest.mark.parametrize("s, reason", [
    (np.full((256, 256), 1.5), "non-integer"),
    (np.full((256, 256), np.nan), "NaN"),
    (np.full((256, 256), -1.0), "negative"),
    (np.full((256, 256), 34, np.int32), "above 33"),
    (np.ones((256, 256), bool), "dtype bool"),
    (np.ones((256, 256), complex), "dtype complex"),
    (np.ones((255, 256)), "shape"),
])
def test_label_contract_rejects(s, reason):
    with pytest.raises(DataError, match=reason) as err:
        siftflow.labels_from_class_map(s, "/some/coast_x.mat")
    assert str(err.value).startswith("/some/coast_x.mat: ")


def test_paths_and_category(tmp_path):
    assert siftflow.image_path(tmp_path, "coast_a1") == (
        tmp_path / siftflow.IMAGE_SUBDIR / "coast_a1.jpg")
    assert siftflow.label_path(tmp_path, "coast_a1") == (
        tmp_path / siftflow.LABEL_SUBDIR / "coast_a1.mat")
    assert siftflow.category_of("tallbuilding_a812069") == "tallbuilding"
    assert siftflow.category_of("insidecity_art_1") == "insidecity"


def test_descriptor_matches_what_prepare_stored(default_data):
    # the sample file was written by `fcn-tf1 prepare` from the released .mat names
    with h5data.H5Dataset(default_data) as data:
        assert data.num_classes == datasets.SIFTFLOW.num_classes == 33
        assert tuple(data.class_names) == tuple(datasets.SIFTFLOW.class_names)


def test_readers_on_real_files_match_published_checksums(siftflow_root):
    sums = _sha256_sums(siftflow_root)
    names = siftflow.read_names(siftflow_root / "trainval.txt")
    assert len(names) == 2486
    for name in names[:4]:
        jpg = siftflow.image_path(siftflow_root, name)
        assert hashlib.sha256(jpg.read_bytes()).hexdigest() == sums[name][0]
        image = siftflow.read_image(jpg)
        assert image.dtype == np.uint8 and image.shape == (256, 256, 3)
        labels = siftflow.read_label(siftflow.label_path(siftflow_root, name))
        assert labels.dtype == np.uint8 and labels.shape == (256, 256)
        assert ((labels < 33) | (labels == 255)).all()
        # The published label hash covers the raw S (0 void, 1..33) as uint8: undo the contract.
        raw = np.where(labels == 255, 0, labels.astype(np.int16) + 1).astype(np.uint8)
        assert hashlib.sha256(raw.tobytes()).hexdigest() == sums[name][1]


def test_read_names(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("\n  coast_a  \n\nforest_b\r\n\n")
    assert siftflow.read_names(path) == ["coast_a", "forest_b"]
    path.write_text("coast_a\nforest_b\ncoast_a\n")
    with pytest.raises(DataError, match="line 3: duplicate name 'coast_a'"):
        siftflow.read_names(path)
    path.write_text("coast_a\n../etc/passwd\n")
    with pytest.raises(DataError, match="not an image name"):
        siftflow.read_names(path)
    path.write_text("\n \n")
    with pytest.raises(DataError, match=f"{path}: empty names list"):
        siftflow.read_names(path)
    with pytest.raises(DataError, match="names list not found"):
        siftflow.read_names(tmp_path / "missing.txt")


def test_read_class_names_sources(tmp_path, siftflow_root):
    assert siftflow.read_class_names(siftflow_root) == list(siftflow.CLASS_NAMES)
    assert siftflow.read_class_names(tmp_path) == list(siftflow.CLASS_NAMES)  # fallback
    label_dir = tmp_path / siftflow.LABEL_SUBDIR
    label_dir.mkdir(parents=True)
    cells = np.empty((1, 33), object)
    for i in range(33):
        cells[0, i] = f"c{i}"
    scipy.io.savemat(label_dir / "coast_a.mat", {"S": np.zeros((256, 256)), "names": cells})
    assert siftflow.read_class_names(tmp_path) == [f"c{i}" for i in range(33)]
    (tmp_path / "classes.txt").write_text(
        "Semantic: 0 is void\n\n" + "".join(f"{i:02d} k{i}\n" for i in range(1, 34))
        + "\nGeometric: -1 is void\n01 sky\n")
    assert siftflow.read_class_names(tmp_path) == [f"k{i}" for i in range(1, 34)]


def test_split_train_val_on_trainval(siftflow_root):
    names = siftflow.read_names(siftflow_root / "trainval.txt")
    train, val = siftflow.split_train_val(names)
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    assert siftflow.split_train_val(shuffled) == (train, val)  # order-free, deterministic
    assert not set(train) & set(val) and sorted(train + val) == sorted(names)
    totals, in_val = Counter(map(siftflow.category_of, names)), Counter(
        map(siftflow.category_of, val))
    assert set(totals) == set(siftflow.CATEGORIES)
    for category, total in totals.items():
        assert in_val[category] == int(np.floor(total * 0.1 + 0.5))  # stratified
    assert len(val) == 249 and len(train) == 2237


def test_split_train_val_small_categories():
    train, val = siftflow.split_train_val(["coast_a", "forest_a", "forest_b", "street_a",
                                           "street_b", "street_c"], val_fraction=0.1)
    assert "coast_a" in train  # a lone image stays in train
    assert Counter(map(siftflow.category_of, val)) == {"forest": 1, "street": 1}
    assert siftflow.split_train_val(["forest_a", "forest_b"], 0.9)[0]  # keeps one to train
    assert siftflow.split_train_val(["forest_a", "forest_b"], 0.0) == (["forest_a", "forest_b"], [])
    with pytest.raises(ConfigError):
        siftflow.split_train_val(["forest_a"], 1.0)
