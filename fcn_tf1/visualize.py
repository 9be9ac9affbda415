"""Class colours for label maps: palette, overlays, side-by-side panels.

Pure numpy and Pillow::

    PALETTE, VOID_COLOR                 uint8 [33, 3] SIFT Flow class colours; black for void
    colorize(label_map)                 uint8 [H, W] labels -> uint8 [H, W, 3] colours
    overlay(image, label_map, names)    colours blended over the image, legend at the right
    legend_entries(label_map, names)    the (name, colour) pairs the legend shows
    triptych(image, gt, pred)           input | ground truth | prediction, side by side
    save_png(path, array)               uint8 [H, W] ('L') or [H, W, 3] ('RGB') -> PNG

The colouring functions take ``palette`` (one row per class: its length is the
class count) and ``void_label``, by default SIFT Flow's PALETTE and void 255.
"""
import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcn_tf1 import siftflow
from fcn_tf1.siftflow import VOID_LABEL

# SIFT Flow's class colours (fcn_tf1.siftflow.CLASS_COLORS): the default palette.
PALETTE = np.array(siftflow.CLASS_COLORS, dtype=np.uint8)
PALETTE.flags.writeable = False
VOID_COLOR = np.zeros(3, np.uint8)
VOID_COLOR.flags.writeable = False

_GAP_COLOR = 255  # white between triptych panels and behind the legend
_PAD = 6  # pixels between image and legend, and around the legend


def _check_labels(label_map, num_classes, void_label):
    label_map = np.asarray(label_map)
    if label_map.dtype.kind not in "iu":
        raise ValueError(f"label map must be an integer array, got dtype {label_map.dtype}")
    bad = (label_map >= num_classes) & (label_map != void_label) | (label_map < 0)
    if bad.any():
        raise ValueError(f"label map values must be 0..{num_classes - 1} or "
                         f"{void_label} (void); found {label_map[bad][0]}")
    return label_map


def _check_image(image, shape):
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3] or [H, W], got shape {image.shape}")
    if image.shape[:2] != tuple(shape):
        raise ValueError(f"image is {image.shape[:2]} but the label map is {tuple(shape)}")
    return image


def colorize(label_map, palette=PALETTE, void_label=VOID_LABEL):
    """Paints a label map with the class palette.

    Args:
      label_map: integer [H, W] (any integer dtype), values 0..C-1 or
        ``void_label``.
      palette: uint8 [C, 3], row c the colour of class c.
      void_label: the label painted VOID_COLOR.

    Returns:
      uint8 [H, W, 3]: palette[label], VOID_COLOR where the label is void.

    Raises:
      ValueError: on a non-integer map or a value neither 0..C-1 nor the void label.
    """
    num_classes = len(palette)
    label_map = _check_labels(label_map, num_classes, void_label)
    # Row C of the lookup table stands for void, so one fancy-index colours a map.
    lookup = np.concatenate([np.asarray(palette, np.uint8), VOID_COLOR[None]])
    return lookup[np.where(label_map == void_label, num_classes, label_map)]


def legend_entries(label_map, class_names, palette=PALETTE, void_label=VOID_LABEL):
    """The classes present in a label map, as the overlay legend lists them.

    Args:
      label_map: integer [H, W], values 0..C-1 or ``void_label``.
      class_names: the class names in label order (at least max label + 1).
      palette: uint8 [C, 3] class colours.
      void_label: the label listed as "void".

    Returns:
      list of (name, (r, g, b)) in label order, with ("void", VOID_COLOR) last
      if the map has void pixels.

    Raises:
      ValueError: on a bad label map, or a label without a class name.
    """
    label_map = _check_labels(label_map, len(palette), void_label)
    labels = np.unique(label_map)
    classes = labels[labels != void_label]
    if classes.size and classes[-1] >= len(class_names):
        raise ValueError(f"label {classes[-1]} present but only {len(class_names)} class names")
    entries = [(str(class_names[i]), tuple(int(c) for c in palette[i])) for i in classes]
    if classes.size < labels.size:
        entries.append(("void", tuple(int(c) for c in VOID_COLOR)))
    return entries


@functools.lru_cache(maxsize=1)
def _font():
    """Pillow's built-in font: no font file to ship or find."""
    return ImageFont.load_default()


def _draw_legend(entries, min_height):
    """Renders legend entries as an RGB image at least min_height tall."""
    font = _font()
    _, text_top, _, text_bottom = font.getbbox("Ag")
    swatch = max(text_bottom - text_top, 8)
    row = swatch + 4
    # Columns only when one would be far taller than the image; never fewer than
    # 12 rows per column, so a small image gets a taller legend, not a very wide one.
    rows_per_column = max((min_height - 2 * _PAD) // row, 12)
    columns = [entries[i:i + rows_per_column] for i in range(0, len(entries), rows_per_column)]
    column_widths = [swatch + 6 + max(font.getbbox(name)[2] for name, _ in column) + _PAD
                     for column in columns]
    width = sum(column_widths) + _PAD
    height = max(min_height, 2 * _PAD + row * min(len(entries), rows_per_column))
    canvas = Image.new("RGB", (width, height), (_GAP_COLOR,) * 3)
    draw = ImageDraw.Draw(canvas)
    x = _PAD
    for column, column_width in zip(columns, column_widths):
        for k, (name, color) in enumerate(column):
            y = _PAD + k * row
            # A grey outline keeps white (crosswalk) visible on the white background.
            draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=color,
                           outline=(128, 128, 128))
            # Centred by hand: text anchors need FreeType, the fallback bitmap font has none.
            text_y = y + (swatch - (text_bottom - text_top)) // 2 - text_top
            draw.text((x + swatch + 6, text_y), name, fill=(0, 0, 0), font=font)
        x += column_width
    return np.asarray(canvas)


def overlay(image, label_map, class_names, alpha=0.5, legend=True, palette=PALETTE,
            void_label=VOID_LABEL):
    """Blends the class colours over an image, with a legend at its right.

    Void pixels are blended with VOID_COLOR, so they show darkened.

    Args:
      image: uint8 [H, W, 3] RGB (or [H, W] grey) of any size.
      label_map: integer [H, W], values 0..C-1 or ``void_label``.
      class_names: the class names in label order.
      alpha: weight of the colours, 0 (image only) to 1 (colours only).
      legend: if True, append a legend of the present classes (swatch + name,
        Pillow's default font) to the right of the image, never covering it.
      palette: uint8 [C, 3] class colours.
      void_label: the label of unlabelled pixels.

    Returns:
      uint8 [H', W', 3]: [H, W, 3] without legend; with it, the image at the
      top left, the legend to its right, W' > W and H' >= H (taller only when
      the legend does not fit beside a small image), white elsewhere.
    """
    label_map = _check_labels(label_map, len(palette), void_label)
    if label_map.ndim != 2:
        raise ValueError(f"label map must be [H, W], got shape {label_map.shape}")
    image = _check_image(image, label_map.shape)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = colorize(label_map, palette, void_label).astype(np.float32)
    blended = (1.0 - alpha) * image + alpha * colors
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if not legend:
        return blended
    panel = _draw_legend(legend_entries(label_map, class_names, palette, void_label),
                         blended.shape[0])
    height, width = max(blended.shape[0], panel.shape[0]), blended.shape[1] + panel.shape[1]
    out = np.full((height, width, 3), _GAP_COLOR, np.uint8)
    out[:blended.shape[0], :blended.shape[1]] = blended
    out[:panel.shape[0], blended.shape[1]:] = panel
    return out


def triptych(image, gt, pred, gap=4, palette=PALETTE, void_label=VOID_LABEL):
    """Input, ground-truth colours and prediction colours side by side.

    For TensorBoard image summaries and validation PNGs.

    Args:
      image: uint8 [H, W, 3] RGB (or [H, W] grey).
      gt: integer [H, W] ground truth, 0..C-1 or ``void_label`` (black).
      pred: integer [H, W] prediction, 0..C-1.
      gap: width in pixels of the white strips between the panels.
      palette: uint8 [C, 3] class colours.
      void_label: the label of unlabelled pixels.

    Returns:
      uint8 [H, 3 * W + 2 * gap, 3].
    """
    gt_colors = colorize(gt, palette, void_label)
    pred_colors = colorize(pred, palette, void_label)
    if gt_colors.ndim != 3 or gt_colors.shape != pred_colors.shape:
        raise ValueError(f"gt {np.shape(gt)} and pred {np.shape(pred)} must both be [H, W]")
    image = _check_image(image, gt_colors.shape[:2])
    strip = np.full((image.shape[0], gap, 3), _GAP_COLOR, np.uint8)
    return np.concatenate([image, strip, gt_colors, strip, pred_colors], axis=1)


def save_png(path, array):
    """Writes a uint8 array as a PNG.

    Args:
      path: str or path-like; its directory must exist.
      array: uint8 [H, W] (written as mode 'L', e.g. a label map) or
        uint8 [H, W, 3] (mode 'RGB').

    The file is replaced atomically (rundir.atomic_write): never half written,
    never written through a symlink or an existing temp name.

    Raises:
      ValueError: on another dtype or shape.
      OSError: the file cannot be written.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"save_png needs uint8, got dtype {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"save_png needs [H, W] or [H, W, 3], got shape {array.shape}")
    image = Image.fromarray(np.ascontiguousarray(array))  # uint8 infers 'L' or 'RGB'
    from fcn_tf1 import rundir
    rundir.atomic_write(path, lambda f: image.save(f, format="PNG"))


def save_class_map(path, classes, palette=PALETTE):
    """Writes a class map as an indexed PNG (mode 'P', as Pascal VOC's labels): the pixel
    values are the class indices, and image viewers show them in the class colours.

    Args:
      path: str or path-like; its directory must exist. Replaced atomically.
      classes: uint8 [H, W], values < len(palette) (or void, shown black).
      palette: uint8 [C, 3], the colour of each class.
    """
    classes = np.asarray(classes)
    if classes.dtype != np.uint8 or classes.ndim != 2:
        raise ValueError(f"save_class_map needs uint8 [H, W], got {classes.dtype} "
                         f"{classes.shape}")
    height, width = classes.shape
    # the bytes are the indices themselves: no conversion that could remap them
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(classes).tobytes())
    colours = np.zeros((256, 3), np.uint8)  # unused indices (void 255 among them): black
    colours[:len(palette)] = palette
    image.putpalette(colours.reshape(-1).tolist())
    from fcn_tf1 import rundir
    rundir.atomic_write(path, lambda f: image.save(f, format="PNG"))
