"""``fcn-tf1 predict``: class maps and coloured overlays for any JPEG/PNG of any size.

For each input image NAME.ext it writes, inside the output directory only:

    NAME.png         single-channel uint8 class map, 0..C-1
    NAME_color.png   the class palette blended over the image, with a legend of
                     the classes present

A bad or unreadable image is reported by name and skipped; the others are
still processed, and the caller gets the list of failures (the command exits
non-zero when it is not empty).
"""
import pathlib

import numpy as np

from fcn_tf1 import siftflow, trained, visualize
from fcn_tf1.errors import DataError, FcnError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def collect_inputs(paths):
    """Expands directories into their JPEG/PNG files (sorted); files are taken as given."""
    found = []
    for path in map(pathlib.Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def read_rgb(path):
    """Any image Pillow decodes -> uint8 [H, W, 3] RGB (grayscale and alpha are converted)."""
    image = siftflow.decode_image(path)
    if image.width < 1 or image.height < 1:
        raise DataError(f"{path}: empty image")
    return np.array(image.convert("RGB"), dtype=np.uint8)


def output_stems(inputs):
    """A safe, unique output name per input: its base name only, so nothing escapes OUT."""
    stems, used = [], set()
    for path in inputs:
        stem = pathlib.PurePath(path).stem.lstrip(".") or "image"
        candidate, n = stem, 1
        while candidate in used:
            n += 1
            candidate = f"{stem}_{n}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def predict(train_dir, out_dir, inputs, checkpoint=None, log=print):
    """Runs the trained model of ``train_dir`` on ``inputs`` and writes PNGs into ``out_dir``.

    Returns:
      (written, failures): lists of output stems and of one-line error messages.
    """
    inputs = collect_inputs(inputs)
    if not inputs:
        raise FcnError("no input images (give image files or directories holding .jpg/.png)")
    out_dir = pathlib.Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FcnError(f"{out_dir}: cannot create output directory ({err.strerror})") from None
    written, failures = [], []
    with trained.open_trained(train_dir, checkpoint) as (config, session, net, _):
        class_names = _class_names(config)
        for path, stem in zip(inputs, output_stems(inputs)):
            try:
                image = read_rgb(path)
            except DataError as err:
                failures.append(str(err))
                log(f"skipped {err}")
                continue
            classes = session.run(net.predictions, {net.images: image[None].astype(np.float32)})[0]
            classes = classes.astype(np.uint8)
            visualize.save_png(out_dir / f"{stem}.png", classes)
            visualize.save_png(out_dir / f"{stem}_color.png",
                               visualize.overlay(image, classes, class_names))
            written.append(stem)
            log(f"{path} -> {out_dir / stem}.png, {stem}_color.png")
    return written, failures


def _class_names(config):
    if config.num_classes == siftflow.NUM_CLASSES:
        return list(siftflow.CLASS_NAMES)
    return [f"class_{i}" for i in range(config.num_classes)]
