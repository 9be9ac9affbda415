"""Datasets other than SIFT Flow: descriptors, layouts, label PNGs, images of any size, and
every bad input answered with one line that names the file (and leaves no output behind).

The folders are built here from real pixels: the embedded SIFT Flow sample, and
CamVid from ../shared/camvid where it is on this machine.
"""
import json
import pathlib
import types

import numpy as np
import pytest
from PIL import Image

from fcn_tf1 import batches, cli, datasets, evaluate, h5data, layouts, prepare_data, run_setup
from fcn_tf1.config import RunConfig
from fcn_tf1.errors import ConfigError

VOID = datasets.VOID


def sample_pairs(default_data, count, sizes=((256, 256), (224, 192), (200, 256))):
    """``count`` real (name, image, label) triples of the embedded sample, cropped top-left
    to a cycle of (height, width) sizes."""
    out = []
    with h5data.H5Dataset(default_data) as data:
        for i in range(count):
            height, width = sizes[i % len(sizes)]
            out.append((data.names[i], data.image(i)[:height, :width],
                        data.label(i)[:height, :width]))
    return out


def write_voc(root, triples, val_names, palette):
    """A Pascal VOC 2012 layout: JPEG images, palette ("P") label PNGs, the split lists."""
    root = pathlib.Path(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    flat = np.zeros((256, 3), np.uint8)
    flat[:len(palette)] = palette
    for name, image, label in triples:
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        png = Image.fromarray(label, mode="L").convert("P")
        png.putpalette(flat.ravel().tolist())
        png.save(root / "SegmentationClass" / f"{name}.png")
    names = [name for name, _, _ in triples]
    for split, members in (("train", [n for n in names if n not in val_names]),
                           ("val", [n for n in names if n in val_names])):
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(
            "".join(f"{n}\n" for n in members))
    return root


def siftflow_descriptor_file(path, layout="voc"):
    path.write_text(json.dumps({"name": "siftflow-voc", "classes": list(datasets.SIFTFLOW.class_names),
                                "void": [255], "layout": layout}))
    return path


@pytest.fixture
def voc_root(tmp_path, default_data):
    triples = sample_pairs(default_data, 9)
    val = {triples[1][0], triples[5][0], triples[6][0]}
    return write_voc(tmp_path / "voc", triples, val, datasets.SIFTFLOW.palette()), triples, val


def test_built_in_descriptors_map_raw_values():
    assert datasets.SIFTFLOW.lut()[[0, 1, 33, 34]].tolist() == [VOID, 0, 32, datasets.INVALID]
    assert datasets.CAMVID.lut()[[0, 10, 11, 12]].tolist() == [0, 10, VOID, datasets.INVALID]
    assert datasets.VOC.lut()[[0, 20, 21, 255]].tolist() == [0, 20, datasets.INVALID, VOID]
    assert datasets.VOC.palette()[[1, 15]].tolist() == [[128, 0, 0], [192, 128, 128]]


def test_a_descriptor_file_remaps_and_round_trips(tmp_path):
    path = tmp_path / "roads.json"
    path.write_text(json.dumps({"classes": ["background", "road"], "void": 255,
                                "remap": {"7": "road", "8": "void"}, "label_offset": 0}))
    descriptor = datasets.load(path)
    assert descriptor.name == "roads" and descriptor.num_classes == 2
    assert descriptor.lut()[[0, 1, 2, 7, 8, 255]].tolist() == [0, 1, -1, 1, VOID, VOID]
    assert datasets.from_json(descriptor.to_json()) == descriptor


@pytest.mark.parametrize("text, words", [
    ("{", "not valid JSON"),
    ('{"classes": ["a"], "colour": 1}', "unknown keys colour"),
    ('{"classes": "a,b"}', "'classes' must be a list"),
    ('{"classes": ["a", "a"]}', "class names repeat"),
    ('{"classes": ["a"], "remap": {"x": 0}}', "remap key 'x'"),
    ('{"classes": ["a"], "remap": {"3": 5}}', "remap targets must be classes 0..0"),
    ('{"classes": ["a", "b"], "colors": [[0, 0, 0]]}', "colors must be 2"),
    ('{"classes": ["a"], "void": [70000]}', "raw label values must be in"),
])
def test_bad_descriptor_files_are_one_line_naming_the_file(tmp_path, text, words):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        datasets.load(path)
    assert str(err.value).startswith(str(path)) and words in str(err.value)
    assert "\n" not in str(err.value)


def test_voc_layout_with_mixed_sizes_keeps_every_image_at_its_size(tmp_path, voc_root):
    root, triples, val = voc_root
    out = tmp_path / "voc.h5"
    descriptor = layouts.descriptor_for(root, descriptor_file=siftflow_descriptor_file(
        tmp_path / "d.json", layout="folders"))
    assert descriptor.layout == "voc"  # taken from the folder
    summary = prepare_data.prepare(root, out, descriptor=descriptor, workers=1, progress=False)
    assert summary["num_images"] == 9 and summary["num_validation"] == 3
    assert summary["sizes"] == [(200, 256), (224, 192), (256, 256)]
    with h5data.H5Dataset(out) as data:
        assert not data.uniform and data.image_shape == (256, 256)
        assert data.num_classes == 33 and data.dataset == "siftflow-voc"
        assert data.has_validation_list
        train, validation = data.split(0.5)  # the file's own val list wins over the fraction
        assert sorted(data.names[i] for i in validation) == sorted(val) and len(train) == 6
        for name, image, label in triples:  # the file lists train, then val
            i = data.indices_of([name])[0]
            assert data.size(i) == label.shape
            np.testing.assert_array_equal(data.label(i), label)  # PNG: exact
            assert data.image(i).shape == image.shape
            # JPEG at quality 95: close to the source pixels
            assert np.abs(data.image(i).astype(int) - image).mean() < 4
    shapes = [(b[0].shape[1:3], len(b[2])) for b in batches.iterate_batches(
        out, data.indices_of(name for name, _, _ in triples), batch_size=4)]
    assert shapes == [((256, 256), 1), ((224, 192), 1), ((200, 256), 1)] * 3
    with batches.BatchStream(out, None, 3, crop_size=None, prefetch=0) as stream:
        images, labels = next(stream)
        assert images.shape == (3, 256, 256, 3) and (labels == VOID).any()


def test_own_folders_and_a_list_of_pairs(tmp_path, default_data):
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    lines = []
    for name, image, label in sample_pairs(default_data, 3):
        Image.fromarray(image).save(images / f"{name}.png")
        Image.fromarray(label).save(labels / f"{name}.png")
        lines.append(f"img/{name}.png lab/{name}.png\n")
    (tmp_path / "pairs.txt").write_text("".join(lines))
    for where in (["--images", str(images), "--labels", str(labels)],
                  ["--pairs", str(tmp_path / "pairs.txt")]):
        out = tmp_path / f"own{len(where)}.h5"
        names = ",".join(datasets.SIFTFLOW.class_names)
        assert cli.main(["prepare", *where, "--classes", names, "--void", "255", "--out", str(out),
                         "--quiet"]) == 0
        with h5data.H5Dataset(out) as data:
            assert len(data) == 3 and not data.has_validation_list
            assert data.class_names == list(datasets.SIFTFLOW.class_names)
            name, _, label = sample_pairs(default_data, 3)[1]
            np.testing.assert_array_equal(data.label(data.indices_of([name])[0]), label)


def test_camvid_as_released(tmp_path, camvid_root):
    summary = prepare_data.prepare(camvid_root, tmp_path / "cv.h5", workers=1, progress=False)
    assert summary["dataset"] == "camvid" and summary["sizes"] == [(360, 480)]
    assert (summary["num_images"], summary["num_validation"]) == (157, 34)
    with h5data.H5Dataset(tmp_path / "cv.h5") as data:
        assert data.class_names[3] == "road" and data.class_colors[3].tolist() == [128, 64, 128]
        counts = data.label_counts()
        assert counts.shape == (11,) and (counts > 0).all()


# --- bad inputs: one line naming the file, nothing left behind -------------------------

def _prepare_fails(capsys, tmp_path, args, path, words):
    out = tmp_path / "out" / "bad.h5"
    status = cli.main(["prepare", *args, "--out", str(out), "--quiet", "--processes", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"fcn-tf1: error: {path}") and words in err[0], err[0]
    assert not out.exists() and not list(out.parent.glob(".*.part"))


def _one_pair(tmp_path, label, image=None, label_name="a.png", mode=None):
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir(exist_ok=True)
    labels.mkdir(exist_ok=True)
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8) if image is None else image).save(
        images / "a.png")
    Image.fromarray(label, mode=mode).save(labels / label_name)
    return ["--images", str(images), "--labels", str(labels), "--classes", "a,b,c", "--void",
            "255"], labels / label_name


def test_an_rgb_colour_label_says_how_to_convert(capsys, tmp_path):
    args, label = _one_pair(tmp_path, np.zeros((48, 64, 3), np.uint8))
    _prepare_fails(capsys, tmp_path, args, label, "RGB colour-coded label")


def test_a_jpeg_label_is_refused_as_lossy(capsys, tmp_path):
    args, label = _one_pair(tmp_path, np.zeros((48, 64), np.uint8), label_name="a.jpg")
    _prepare_fails(capsys, tmp_path, args, tmp_path / "img" / "a.png", "is a JPEG")
    (tmp_path / "lab" / "a.jpg").rename(tmp_path / "lab" / "a.png")  # a JPEG named .png
    _prepare_fails(capsys, tmp_path, args, tmp_path / "lab" / "a.png", "lossless format")


def test_a_label_of_another_size_names_both_sizes(capsys, tmp_path):
    args, label = _one_pair(tmp_path, np.zeros((40, 64), np.uint8))
    _prepare_fails(capsys, tmp_path, args, label, "label is 64x40 but its image")


def test_a_value_outside_the_classes_names_value_and_pixels(capsys, tmp_path):
    values = np.zeros((48, 64), np.uint8)
    values[:2, :3] = 40
    args, label = _one_pair(tmp_path, values)
    _prepare_fails(capsys, tmp_path, args, label, "value 40 (6 pixels) is neither a class nor "
                                                  "void")


def test_a_missing_pair_and_an_empty_split(capsys, tmp_path, voc_root):
    root = voc_root[0]
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img" / "b.jpg")
    _prepare_fails(capsys, tmp_path, ["--images", str(tmp_path / "img"), "--labels",
                                      str(tmp_path / "lab"), "--classes", "a,b"],
                   tmp_path / "img" / "b.jpg", "no label for this image")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n")
    _prepare_fails(capsys, tmp_path, ["--data-dir", str(root), "--dataset", "voc"],
                   root / "ImageSets/Segmentation/val.txt", "empty names list")
    victim = sorted((root / "SegmentationClass").iterdir())[0]
    victim.unlink()
    _prepare_fails(capsys, tmp_path, ["--data-dir", str(root), "--dataset", "voc", "--split",
                                      "train"], victim, "no such label file")


def test_an_unknown_folder_and_contradictory_options(capsys, tmp_path):
    _prepare_fails(capsys, tmp_path, ["--data-dir", str(tmp_path)], tmp_path,
                   "not a known dataset layout")
    assert cli.main(["prepare", "--data-dir", str(tmp_path), "--dataset", "voc", "--classes",
                     "a", "--out", str(tmp_path / "x.h5")]) == 2
    assert "say what the labels mean once" in capsys.readouterr().err


# --- one class set per run -------------------------------------------------------------

def _dataset(names):
    return types.SimpleNamespace(class_names=list(names), num_classes=len(names), void_label=VOID,
                                 class_colors=datasets.voc_palette(len(names)))


def test_a_run_takes_its_class_set_from_the_data_and_keeps_it(tmp_path):
    camvid = _dataset(datasets.CAMVID.class_names)
    config = run_setup.with_class_set(RunConfig(), camvid, False, tmp_path)
    assert config.num_classes == 11 and config.class_names == datasets.CAMVID.class_names
    assert config.class_colors[1] == (128, 0, 0)  # voc_palette: the dataset's colours
    assert run_setup.with_class_set(config, camvid, True, tmp_path) == config
    with pytest.raises(ConfigError, match="a run cannot change its classes"):
        run_setup.with_class_set(config.replace(allow_other_data=True),
                                 _dataset(datasets.VOC.class_names[:11]), True, tmp_path)
    with pytest.raises(ConfigError, match="has 33 classes"):
        evaluate.check_class_set(config, list(datasets.SIFTFLOW.class_names), "other.h5")
    evaluate.check_class_set(config, list(datasets.CAMVID.class_names), "same.h5")


def test_an_older_siftflow_run_without_recorded_names_still_matches():
    legacy = RunConfig()  # 33 classes, no names: written before runs recorded them
    names, palette = datasets.run_classes(legacy)
    assert names == list(datasets.SIFTFLOW.class_names) and palette.shape == (33, 3)
    evaluate.check_class_set(legacy, names, "sample.h5")


def test_a_custom_descriptor_cannot_claim_siftflow_mat_labels(siftflow_root):
    with pytest.raises(ConfigError, match="own classes"):
        layouts.descriptor_for(siftflow_root, classes="a,b")
