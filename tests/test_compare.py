"""compare.py and ``fcn-tf1 compare``: the two loss variants on one graph and one batch."""
import json

import h5py
import numpy as np
import pytest

from fcn_tf1 import cli, compare
from fcn_tf1.errors import DataError

KEYS = ("loss_reshape", "loss_reshape_free", "max_abs_loss_diff", "max_abs_grad_diff",
        "max_rel_grad_diff", "step_time_reshape_s", "step_time_reshape_free_s", "time_ratio")


def write_sample(path, n=5, size=(48, 40), void_in=(1, 3, 4), bad_label=None):
    """An HDF5 file in the prepared layout: images uint8, labels uint8 (void 255), names."""
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 33, (n, *size)).astype(np.uint8)
    for i in void_in:
        labels[i, :4] = 255
    if bad_label is not None:
        labels[void_in[0], 10, 10] = bad_label
    with h5py.File(path, "w") as h5file:
        h5file["images"] = rng.randint(0, 256, (n, *size, 3)).astype(np.uint8)
        h5file["labels"] = labels
        h5file["names"] = np.array([f"image{i}".encode() for i in range(n)])
    return path


def test_reads_the_first_images_with_void(tmp_path):
    path = write_sample(tmp_path / "sample.h5")
    images, labels, names = compare.read_void_batch(path, 2)
    assert names == ["image1", "image3"]
    assert images.dtype == np.float32 and images.shape == (2, 48, 40, 3)
    assert labels.dtype == np.int64 and (labels == 255).any(axis=(1, 2)).all()
    # Too few images with void: the rest are filled in file order.
    assert compare.read_void_batch(path, 4)[2] == ["image0", "image1", "image3", "image4"]


def test_bad_files_give_data_errors(tmp_path):
    with pytest.raises(DataError, match="missing.h5: no such HDF5 file"):
        compare.read_void_batch(tmp_path / "missing.h5", 2)
    with h5py.File(tmp_path / "nolabels.h5", "w") as h5file:
        h5file["images"] = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(DataError, match="no dataset 'labels'"):
        compare.read_void_batch(tmp_path / "nolabels.h5", 2)
    bad = write_sample(tmp_path / "bad.h5", bad_label=40)
    with pytest.raises(DataError, match=r"bad\.h5: labels\[1\] \(image1\) has value 40, "
                                        r"outside 0\.\.32 and not void 255"):
        compare.read_void_batch(bad, 2)


def test_cli_compare_json(tmp_path, capsys):
    path = write_sample(tmp_path / "sample.h5")
    out = tmp_path / "report.json"
    status = cli.main(["compare", "--data", str(path), "--batch-size", "2", "--repeats", "1",
                       "--width", "2", "--json", str(out)])
    assert status == 0
    report = json.loads(out.read_text())
    for key in KEYS:
        assert isinstance(report[key], float), key
    assert report["max_abs_loss_diff"] <= 1e-6 * report["loss_reshape"]
    assert report["max_rel_grad_diff"] <= 1e-5
    assert report["num_void_pixels"] == 2 * 4 * 40
    assert report["step_time_reshape_s"] > 0 and report["time_ratio"] > 0
    assert report["variables_with_zero_gradient"] == []  # after the burn-in steps
    printed = capsys.readouterr().out
    assert "loss, reshape-free" in printed and "time ratio" in printed


def test_cli_compare_reports_a_missing_file(tmp_path, capsys):
    assert cli.main(["compare", "--data", str(tmp_path / "nope.h5")]) == 2
    assert "fcn-tf1: error:" in capsys.readouterr().err
