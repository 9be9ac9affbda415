"""``fcn-tf1 predict``: class maps and coloured overlays for any JPEG/PNG of any size.

For each input image NAME.ext it writes, inside the output directory only:

    NAME.png         the class map, 0..C-1, as an indexed PNG (mode 'P') whose palette
                     holds the class colours: the values are the classes, viewers show colours
    NAME_color.png   the class palette blended over the image, with a legend of
                     the classes present

A bad or unreadable image is reported by name and skipped; the others are
still processed, and the caller gets the list of failures (the command exits
non-zero when it is not empty).
"""
import pathlib

import numpy as np

from fcn_tf1 import datasets, decoders, load_run, visualize
from fcn_tf1.errors import DataError, FcnError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# One forward pass holds several float32 maps of H*W*33 values: 4096x4096 already takes
# gigabytes on a CPU. Larger images are refused from their header, before decoding.
MAX_PIXELS = 4096 * 4096
# A file name has at most 255 bytes: the stem, "_color.png" and a "_N" suffix must fit.
MAX_STEM_BYTES = 200


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
    """A JPEG or PNG -> uint8 [H, W, 3] RGB, upright (decoders.read_rgb), at most MAX_PIXELS."""
    return decoders.read_rgb(path, max_pixels=MAX_PIXELS)


def _stem(path):
    """The base name without suffix, as a file name: no leading dot, no NUL, not too long."""
    stem = pathlib.PurePath(path).stem.replace("\x00", "_")
    stem = stem.encode("utf-8")[:MAX_STEM_BYTES].decode("utf-8", "ignore")
    return stem.lstrip(".") or "image"


def output_stems(inputs):
    """A safe output name per input: its base name only, so nothing escapes OUT.

    No two inputs share an output file, including through the ``_color``
    suffix ("x" and "x_color") or letter case (on case-insensitive disks).
    """
    stems, taken = [], set()
    for path in inputs:
        stem = _stem(path)
        candidate, n = stem, 1
        while {f"{candidate}.png".casefold(), f"{candidate}_color.png".casefold()} & taken:
            n += 1
            candidate = f"{stem}_{n}"
        taken |= {f"{candidate}.png".casefold(), f"{candidate}_color.png".casefold()}
        stems.append(candidate)
    return stems


def check_outputs(inputs, out_dir, stems, overwrite=False):
    """Refuses outputs that are inputs (always) or existing files (unless ``overwrite``)."""
    inputs_seen = set()
    for path in inputs:
        try:
            inputs_seen.add(path.resolve())
        except OSError:
            continue  # unreadable: reported as a skipped image later
    for stem in stems:
        for output in (out_dir / f"{stem}.png", out_dir / f"{stem}_color.png"):
            if output.resolve() in inputs_seen:
                raise FcnError(f"{output}: is one of the input images; predictions never "
                               "replace their inputs (choose another --out)")
            if (output.exists() or output.is_symlink()) and not overwrite:
                raise FcnError(f"{output}: already exists; pass --overwrite to replace "
                               "earlier predictions")


def predict(train_dir, out_dir, inputs, checkpoint=None, test_scales=None, test_flip=False,
            prior_correction=None, overwrite=False, log=print):
    """Runs the trained model of ``train_dir`` on ``inputs`` and writes PNGs into ``out_dir``.

    ``test_scales`` (multiples of the run's input_scale) and ``test_flip``
    average the predictions over test-time views and ``prior_correction``
    (tau) replaces the run's own, as in ``fcn-tf1 eval``. Nothing is written
    over an input image, nor, without ``overwrite``, over an existing file.

    Returns:
      (written, failures): lists of output stems and of one-line error messages.
    """
    inputs = collect_inputs(inputs)
    if not inputs:
        raise FcnError("no input images (give image files or directories holding .jpg/.png)")
    out_dir = pathlib.Path(out_dir)
    stems = output_stems(inputs)
    check_outputs(inputs, out_dir, stems, overwrite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FcnError(f"{out_dir}: cannot create output directory ({err.strerror})") from None
    written, failures = [], []
    with load_run.open_trained(train_dir, checkpoint, test_scales, test_flip,
                              prior_correction) as (
            config, session, net, _):
        class_names, palette = datasets.run_classes(config)
        for path, stem in zip(inputs, stems):
            try:
                image = read_rgb(path)
            except DataError as err:
                failures.append(str(err))
                log(f"skipped {err}")
                continue
            classes = session.run(net.predictions, {net.images: image[None].astype(np.float32)})[0]
            classes = classes.astype(np.uint8)
            try:
                visualize.save_class_map(out_dir / f"{stem}.png", classes, palette=palette)
                visualize.save_png(out_dir / f"{stem}_color.png",
                                   visualize.overlay(image, classes, class_names, palette=palette))
            except OSError as err:  # the output side (a full disk): no point going on
                raise FcnError(f"{out_dir / stem}.png: cannot write ({err.strerror or err}); "
                               f"{len(written)} image(s) done") from None
            written.append(stem)
            log(f"{path} -> {out_dir / stem}.png, {stem}_color.png")
    return written, failures

