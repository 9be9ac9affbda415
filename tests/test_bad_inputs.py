"""Every bad input is one line naming the file and the reason: exit 2, no traceback, no output.

Each test builds a small SIFT Flow root in tmp_path (synthetic JPEGs and .mat files in the
released layout), breaks one thing, and runs the real command line.
"""
import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from fcn_tf1 import h5data, siftflow
from fcn_tf1.cli import main
from fcn_tf1.errors import DataError

GOOD = ("coast_good1", "forest_good2")


def _class_map(seed=0):
    """A valid float64 S: 0 (void) .. 33."""
    return np.random.default_rng(seed).integers(0, 34, (256, 256)).astype(np.float64)


def write_jpeg(path, size=(256, 256), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, quality=90)


def make_root(tmp_path, names=GOOD):
    """A released-layout root holding valid files for ``names`` and trainval.txt listing them."""
    root = tmp_path / "siftflow"
    (root / siftflow.IMAGE_SUBDIR).mkdir(parents=True)
    (root / siftflow.LABEL_SUBDIR).mkdir(parents=True)
    for seed, name in enumerate(names):
        write_jpeg(siftflow.image_path(root, name), seed=seed)
        scipy.io.savemat(siftflow.label_path(root, name), {"S": _class_map(seed)})
    (root / "trainval.txt").write_text("".join(f"{n}\n" for n in names))
    return root


def run_prepare(tmp_path, root, *extra):
    out = tmp_path / "out" / "data.h5"
    args = ["prepare", "--data-dir", str(root), "--out", str(out), "--quiet", *extra]
    if "--processes" not in extra:
        args += ["--processes", "1"]
    return main(args), out


def assert_one_line_error(capsys, status, out, path, reason):
    err = capsys.readouterr().err
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fcn-tf1: error: {path}: "), lines[0]
    assert reason in lines[0], lines[0]
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir())  # no temporary file left


def _with_bad_file(tmp_path, name="street_bad3"):
    """A root whose trainval.txt lists GOOD plus ``name``, whose files the caller writes."""
    root = make_root(tmp_path)
    (root / "trainval.txt").write_text("".join(f"{n}\n" for n in (*GOOD, name)))
    return root, siftflow.image_path(root, name), siftflow.label_path(root, name)


# --- images ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_truncated_jpeg(tmp_path, capsys, workers):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image)
    image.write_bytes(image.read_bytes()[:20000])
    scipy.io.savemat(label, {"S": _class_map()})
    status, out = run_prepare(tmp_path, root, "--processes", workers)
    assert_one_line_error(capsys, status, out, image, "image file is truncated")


def test_corrupt_jpeg(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image)
    data = bytearray(image.read_bytes())
    data[3:60] = bytes(57)  # the markers after SOI: quantisation/Huffman tables unreadable
    image.write_bytes(bytes(data))
    scipy.io.savemat(label, {"S": _class_map()})
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, image, "corrupt")


def test_not_an_image(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    image.write_text("this is not a JPEG")
    scipy.io.savemat(label, {"S": _class_map()})
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, image, "not a readable image")


def test_image_not_256x256(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image, size=(256, 200))
    scipy.io.savemat(label, {"S": _class_map()})
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, image, "image is 256x200, expected 256x256")


def test_grayscale_image(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image, mode="L")
    scipy.io.savemat(label, {"S": _class_map()})
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, image, "image mode L (grayscale), expected RGB")


# --- label maps --------------------------------------------------------------------------

NOT_NUMERIC = "expected an integer-valued numeric class map"


def _s_with(value, dtype=np.float64):
    s = _class_map().astype(dtype)
    s[17, 42] = value
    return s


@pytest.mark.parametrize("variables, reason", [
    ({"T": _class_map()}, "no variable 'S'"),
    ({"S": np.zeros((128, 256))}, "S has shape (128, 256), expected (256, 256)"),
    ({"S": _s_with(2.5)}, "S has non-integer values (e.g. 2.5)"),
    ({"S": _s_with(-1)}, "S has negative values (min -1)"),
    ({"S": _s_with(-1, np.int16)}, "S has negative values (min -1)"),
    ({"S": _s_with(np.nan)}, "S contains NaN"),
    ({"S": _s_with(34)}, "S has values above 33 (max 34)"),
    ({"S": "sky"}, "S has dtype <U3 (string), " + NOT_NUMERIC),
    ({"S": np.ones((256, 256), bool)}, "S has dtype bool"),
], ids=["no_S", "wrong_shape", "non_integer", "negative", "negative_int16", "nan",
        "above_33", "string", "bool"])
def test_bad_label_map(tmp_path, capsys, variables, reason):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image)
    scipy.io.savemat(label, variables)
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, label, reason)


def test_label_not_a_mat_file(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image)
    label.write_bytes(b"\x00garbage" * 50)
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, label, "not a readable MATLAB .mat file")


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_integer_valued_label_types_are_accepted(tmp_path, capsys, dtype):
    root, image, label = _with_bad_file(tmp_path, "street_typed3")
    write_jpeg(image)
    s = _class_map(7).astype(dtype)
    scipy.io.savemat(label, {"S": s})
    status, out = run_prepare(tmp_path, root)
    assert status == 0, capsys.readouterr().err
    with h5data.H5Dataset(out) as data:
        expected = np.where(s == 0, 255, s.astype(np.int64) - 1)
        np.testing.assert_array_equal(data.label(data.indices_of(["street_typed3"])[0]), expected)


# --- lists and layout --------------------------------------------------------------------


def test_listed_name_without_image_file(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    scipy.io.savemat(label, {"S": _class_map()})
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, image, "no such image file")


def test_listed_name_without_label_file(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image)
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, label, "no such label file")


def test_empty_split_list(tmp_path, capsys):
    root = make_root(tmp_path)
    (root / "trainval.txt").write_text("\n   \n")
    status, out = run_prepare(tmp_path, root)
    assert_one_line_error(capsys, status, out, root / "trainval.txt", "empty names list")


def test_missing_split_list(tmp_path, capsys):
    root = make_root(tmp_path)
    status, out = run_prepare(tmp_path, root, "--split", "test")
    assert_one_line_error(capsys, status, out, root / "test.txt", "split list not found")


def test_missing_names_file(tmp_path, capsys):
    root = make_root(tmp_path)
    status, out = run_prepare(tmp_path, root, "--names-file", str(tmp_path / "nope.txt"))
    assert_one_line_error(capsys, status, out, tmp_path / "nope.txt", "names list not found")


def test_missing_data_dir(tmp_path, capsys):
    status, out = run_prepare(tmp_path, tmp_path / "nowhere")
    assert_one_line_error(capsys, status, out, tmp_path / "nowhere", "data directory not found")


def test_failure_keeps_an_existing_output(tmp_path, capsys):
    root, image, label = _with_bad_file(tmp_path)
    write_jpeg(image, mode="L")
    scipy.io.savemat(label, {"S": _class_map()})
    out = tmp_path / "out" / "data.h5"
    out.parent.mkdir()
    out.write_bytes(b"an earlier file")
    status, _ = run_prepare(tmp_path, root, "--overwrite")
    assert status == 2 and "grayscale" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier file" and len(list(out.parent.iterdir())) == 1


# --- prepared HDF5 files (the reader) ----------------------------------------------------


@pytest.fixture
def good_h5(tmp_path):
    root = make_root(tmp_path)
    status, out = run_prepare(tmp_path, root)
    assert status == 0
    return out


def _assert_reader_error(path, reason):
    with pytest.raises(DataError) as err:
        with h5data.H5Dataset(path) as data:
            data.image(0)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert reason in message, message


def test_corrupt_hdf5(good_h5):
    data = bytearray(good_h5.read_bytes())
    data[8:200] = b"\xff" * 192  # superblock and root group header destroyed
    good_h5.write_bytes(bytes(data))
    _assert_reader_error(good_h5, "not a readable HDF5 file")


def test_corrupt_hdf5_chunk(good_h5):
    with h5py.File(good_h5, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    data = bytearray(good_h5.read_bytes())
    data[offset:offset + 64] = bytes(64)  # the deflate stream of image 0
    good_h5.write_bytes(bytes(data))
    _assert_reader_error(good_h5, "cannot read images[0]")


def test_truncated_hdf5(good_h5):
    good_h5.write_bytes(good_h5.read_bytes()[:good_h5.stat().st_size // 2])
    _assert_reader_error(good_h5, "not a readable HDF5 file")


def test_not_hdf5(tmp_path):
    path = tmp_path / "data.h5"
    path.write_text("not an HDF5 file\n")
    _assert_reader_error(path, "not a readable HDF5 file")


def test_hdf5_without_expected_datasets(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 8, 8, 3), np.uint8)
    _assert_reader_error(path, "no dataset 'labels'")


def test_hdf5_mismatched_lengths(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((3, 8, 8, 3), np.uint8)
        f["labels"] = np.zeros((2, 8, 8), np.uint8)
        f.create_dataset("names", data=["a_1", "a_2", "a_3"], dtype=h5py.string_dtype())
    _assert_reader_error(path, "mismatched lengths: images 3, labels 2, names 3")


def test_hdf5_wrong_dtype(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 8, 8, 3), np.float32)
        f["labels"] = np.zeros((2, 8, 8), np.uint8)
        f.create_dataset("names", data=["a_1", "a_2"], dtype=h5py.string_dtype())
    _assert_reader_error(path, "images is float32 (2, 8, 8, 3), expected uint8 [N, H, W, 3]")


def test_hdf5_label_out_of_range(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((1, 8, 8, 3), np.uint8)
        f["labels"] = np.full((1, 8, 8), 33, np.uint8)
        f.create_dataset("names", data=["a_1"], dtype=h5py.string_dtype())
    with pytest.raises(DataError, match=r"labels\[0\] \(a_1\) has value 33, outside 0..32"):
        with h5data.H5Dataset(path) as data:
            data.label_counts()


def test_missing_hdf5(tmp_path):
    _assert_reader_error(tmp_path / "none.h5", "no such HDF5 file")


def test_output_not_writable(tmp_path, capsys):
    root = make_root(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status = main(["prepare", "--data-dir", str(root), "--out", str(blocker / "data.h5"),
                   "--quiet", "--processes", "1"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"fcn-tf1: error: {blocker / 'data.h5'}: cannot write")
