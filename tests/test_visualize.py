"""Palette, colorize, overlay with legend, triptych and PNG writing."""
import numpy as np
import pytest
from PIL import Image

from fcn_tf1 import visualize

NAMES = ("awning balcony bird boat bridge building bus car cow crosswalk desert door fence "
         "field grass moon mountain person plant pole river road rock sand sea sidewalk sign "
         "sky staircase streetlight sun tree window").split()
SKY, BUILDING, CAR, TREE, ROAD, VOID = 27, 5, 7, 31, 21, 255


def _bands(height, width, labels):
    """A label map of horizontal bands, one per label, over a gradient image."""
    label_map = np.zeros((height, width), np.uint8)
    for k, rows in enumerate(np.array_split(np.arange(height), len(labels))):
        label_map[rows] = labels[k]
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, width)[None, :]
    image[..., 1] = np.linspace(0, 255, height)[:, None]
    return image, label_map


def _has_color(array, color):
    return bool((array.reshape(-1, 3) == np.asarray(color, np.uint8)).all(axis=1).any())


def test_palette_fixed_distinct_and_not_void():
    assert visualize.PALETTE.shape == (33, 3) and visualize.PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in visualize.PALETTE}) == 33
    assert not _has_color(visualize.PALETTE, visualize.VOID_COLOR)
    assert tuple(visualize.VOID_COLOR) == (0, 0, 0)
    sky, tree = visualize.PALETTE[SKY].astype(int), visualize.PALETTE[TREE].astype(int)
    assert sky[2] == sky.max() and tree[1] == tree.max()  # sky blue-ish, tree green-ish
    with pytest.raises(ValueError):
        visualize.PALETTE[0, 0] = 1  # read-only: nobody repaints a class by accident


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.uint16])
def test_colorize(dtype):
    label_map = np.array([[SKY, TREE], [VOID, 0]], dtype)
    colors = visualize.colorize(label_map)
    assert colors.shape == (2, 2, 3) and colors.dtype == np.uint8
    np.testing.assert_array_equal(colors[0, 0], visualize.PALETTE[SKY])
    np.testing.assert_array_equal(colors[0, 1], visualize.PALETTE[TREE])
    np.testing.assert_array_equal(colors[1, 0], visualize.VOID_COLOR)
    np.testing.assert_array_equal(colors[1, 1], visualize.PALETTE[0])


@pytest.mark.parametrize("bad", [np.array([[33]]), np.array([[254]]), np.array([[-1]]),
                                 np.array([[1.0]])])
def test_colorize_rejects(bad):
    with pytest.raises(ValueError):
        visualize.colorize(bad)


def test_legend_entries_are_exactly_the_present_classes():
    label_map = np.array([[ROAD, SKY, SKY], [TREE, VOID, ROAD]], np.uint8)
    entries = visualize.legend_entries(label_map, NAMES)
    assert [name for name, _ in entries] == ["road", "sky", "tree", "void"]
    assert entries[1][1] == tuple(int(c) for c in visualize.PALETTE[SKY])
    no_void = visualize.legend_entries(np.array([[TREE]]), NAMES)
    assert no_void == [("tree", tuple(int(c) for c in visualize.PALETTE[TREE]))]
    with pytest.raises(ValueError, match="class names"):
        visualize.legend_entries(label_map, NAMES[:10])


@pytest.mark.parametrize("height, width", [(250, 333), (64, 64), (768, 1024), (7, 5)])
def test_overlay_any_size_legend_beside_image(height, width):
    image, label_map = _bands(height, width, [SKY, TREE, ROAD, VOID])
    plain = visualize.overlay(image, label_map, NAMES, legend=False)
    assert plain.shape == (height, width, 3) and plain.dtype == np.uint8
    out = visualize.overlay(image, label_map, NAMES)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] >= height and out.shape[1] > width
    np.testing.assert_array_equal(out[:height, :width], plain)  # the legend covers nothing
    legend = out[:, width:]
    for present in (SKY, TREE, ROAD):
        assert _has_color(legend, visualize.PALETTE[present])
    for absent in (BUILDING, CAR):
        assert not _has_color(legend, visualize.PALETTE[absent])


def test_overlay_legend_grows_with_its_entries():
    image, few = _bands(64, 64, [SKY])
    _, many = _bands(64, 64, list(range(33)))
    narrow = visualize.overlay(image, few, NAMES)
    wide = visualize.overlay(image, many, NAMES)
    assert wide.shape[0] >= narrow.shape[0] and wide.shape[1] > narrow.shape[1]


def test_overlay_blending():
    image, label_map = _bands(10, 12, [SKY, VOID])
    np.testing.assert_array_equal(visualize.overlay(image, label_map, NAMES, alpha=0.0,
                                                    legend=False), image)
    np.testing.assert_array_equal(visualize.overlay(image, label_map, NAMES, alpha=1.0,
                                                    legend=False), visualize.colorize(label_map))
    half = visualize.overlay(image, label_map, NAMES, legend=False).astype(int)
    expected = (image.astype(int) + visualize.colorize(label_map)) / 2
    assert np.abs(half - expected).max() <= 0.5
    grey = visualize.overlay(image[..., 0], label_map, NAMES, legend=False)  # [H, W] input
    assert grey.shape == (10, 12, 3)


def test_overlay_rejects():
    image, label_map = _bands(8, 8, [SKY])
    with pytest.raises(ValueError, match="alpha"):
        visualize.overlay(image, label_map, NAMES, alpha=1.5)
    with pytest.raises(ValueError, match="label map"):
        visualize.overlay(image[:4], label_map, NAMES)
    with pytest.raises(ValueError, match="uint8"):
        visualize.overlay(image.astype(np.float32), label_map, NAMES)


def test_triptych():
    image, gt = _bands(20, 30, [SKY, TREE, VOID])
    pred = np.full(gt.shape, ROAD, np.int64)
    out = visualize.triptych(image, gt, pred, gap=4)
    assert out.shape == (20, 3 * 30 + 2 * 4, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :30], image)
    np.testing.assert_array_equal(out[:, 34:64], visualize.colorize(gt))
    np.testing.assert_array_equal(out[:, 68:], visualize.colorize(pred))
    assert (out[:, 30:34] == 255).all()
    assert visualize.triptych(image, gt, pred, gap=0).shape == (20, 90, 3)
    with pytest.raises(ValueError):
        visualize.triptych(image, gt, pred[:10])


def test_save_png_round_trip(tmp_path):
    image, label_map = _bands(13, 17, [SKY, TREE, VOID])
    visualize.save_png(tmp_path / "labels.png", label_map)
    visualize.save_png(str(tmp_path / "rgb.png"), image)
    with Image.open(tmp_path / "labels.png") as png:
        assert png.mode == "L"
        np.testing.assert_array_equal(np.asarray(png), label_map)
    with Image.open(tmp_path / "rgb.png") as png:
        assert png.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(png), image)
    with pytest.raises(ValueError, match="uint8"):
        visualize.save_png(tmp_path / "bad.png", label_map.astype(np.int64))
    with pytest.raises(ValueError, match="shape"):
        visualize.save_png(tmp_path / "bad.png", np.zeros((4, 4, 4), np.uint8))
