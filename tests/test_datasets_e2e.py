"""prepare + train + eval + predict + export on datasets other than SIFT Flow's release.

A VOC-layout folder built from the embedded sample's real pixels (palette PNGs,
three image sizes) and CamVid as released (../shared/camvid, 11 classes,
480 x 360; skipped where absent). Integration tier: whole training runs.
"""
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcn_tf1 import cli, datasets, h5data

from tests.test_datasets import sample_pairs, write_voc

TINY = ["--width", "4", "--crop-size", "64", "--batch-size", "2", "--max-steps", "3",
        "--log-every-steps", "0", "--image-summary-every-steps", "0"]


def _end_to_end(tmp_path, capsys, data, num_classes, palette, image):
    run = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--train-dir", str(run), *TINY]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["num_classes"] == num_classes and len(config["class_names"]) == num_classes
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["per_class"]) == num_classes
    capsys.readouterr()
    assert cli.main(["eval", "--train-dir", str(run), "--out", str(tmp_path / "e.json")]) == 0
    scored = json.loads((tmp_path / "e.json").read_text())
    with h5data.H5Dataset(data) as dataset:
        _, validation = dataset.split(config["val_fraction"])
        pixels = sum(int((dataset.label(i) != datasets.VOID).sum()) for i in validation)
    assert scored["num_images"] == len(validation)
    assert sum(row["gt_pixels"] for row in scored["per_class"].values()) == pixels  # void excluded
    Image.fromarray(image).save(tmp_path / "odd.png")
    assert cli.main(["predict", "--train-dir", str(run), "--out", str(tmp_path / "p"),
                     str(tmp_path / "odd.png")]) == 0
    classes = Image.open(tmp_path / "p" / "odd.png")
    assert classes.mode == "P" and classes.size == (image.shape[1], image.shape[0])
    stored = np.array(classes.getpalette()[:3 * num_classes], np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(stored, palette)
    assert cli.main(["export", "--train-dir", str(run), "--out", str(tmp_path / "sm")]) == 0
    served = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](
        images=tf.constant(image[None]))
    assert served["probabilities"].shape == (1, *image.shape[:2], num_classes)


def test_voc_layout_of_mixed_sizes_end_to_end(tmp_path, capsys, default_data):
    triples = sample_pairs(default_data, 12)
    root = write_voc(tmp_path / "voc", triples, {t[0] for t in triples[::4]},
                     datasets.SIFTFLOW.palette())
    descriptor = tmp_path / "classes.json"
    colors = datasets.SIFTFLOW.palette().tolist()
    descriptor.write_text(json.dumps({"name": "sample-voc", "void": 255, "colors": colors,
                                      "classes": list(datasets.SIFTFLOW.class_names)}))
    data = tmp_path / "voc.h5"
    assert cli.main(["prepare", "--data-dir", str(root), "--descriptor", str(descriptor),
                     "--out", str(data), "--quiet"]) == 0
    _end_to_end(tmp_path, capsys, data, 33, datasets.SIFTFLOW.palette(),
                triples[1][1][:150, :170])


def test_camvid_end_to_end(tmp_path, capsys, camvid_root):
    # a small root of real CamVid pairs: list files naming the released files
    root = tmp_path / "camvid"
    (root / "trainannot").mkdir(parents=True)
    for split, count in (("train", 6), ("val", 2)):
        lines = (camvid_root / f"{split}.txt").read_text().splitlines()[:count]
        (root / f"{split}.txt").write_text("".join(
            " ".join(str(camvid_root / word) for word in line.split()) + "\n" for line in lines))
    data = tmp_path / "camvid.h5"
    assert cli.main(["prepare", "--data-dir", str(root), "--out", str(data), "--quiet"]) == 0
    with h5data.H5Dataset(data) as dataset:
        assert dataset.dataset == "camvid" and len(dataset) == 8
        image = dataset.image(0)
    _end_to_end(tmp_path, capsys, data, 11, datasets.CAMVID.palette(), image[:200, :300])
    # a run of CamVid's 11 classes cannot resume on, or score, SIFT Flow's 33
    status = cli.main(["train", "--train-dir", str(tmp_path / "run"), *TINY, "--max-steps", "4",
                       "--data", str(default_sample()), "--allow-other-data"])
    assert status == 2 and "a run cannot change its classes" in capsys.readouterr().err
    assert cli.main(["eval", "--train-dir", str(tmp_path / "run"), "--data",
                     str(default_sample())]) == 2
    assert "the run predicts 11" in capsys.readouterr().err


def default_sample():
    from fcn_tf1 import paths
    return paths.DEFAULT_DATA


@pytest.fixture(autouse=True)
def _quiet_tf():
    tf.get_logger().setLevel("ERROR")
