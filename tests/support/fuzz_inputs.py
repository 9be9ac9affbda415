"""Inputs for the fuzzers: byte mutation, valid seed files, a small released-layout root.

    mutate(data, rng)             a few random edits (bit flips, special words, cuts, inserts)
    seed_inputs(workdir)          valid files per reader kind: {"jpeg": [(suffix, bytes)], ...}
    make_root(workdir, count)     a SIFT Flow root of ``count`` real sample images and labels
    encode_image(image, **opts)   Pillow-encoded bytes (JPEG, PNG)
    mat_bytes(variables, **opts)  a MATLAB file's bytes (scipy.io.savemat)

Every valid input comes from the embedded sample ``data/siftflow_sample.h5``.
"""
import io
import pathlib

import h5py
import numpy as np
import scipy.io
from PIL import Image

from fcn_tf1 import h5data, siftflow

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "data" / "siftflow_sample.h5"
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_32 = (0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000, 0x00010001)


# --- mutation ----------------------------------------------------------------------------

def _offset(size, rng):
    """Half the time in the first 2 KiB (headers, tables, superblocks), else anywhere."""
    if size == 0:
        return 0
    return rng.randrange(min(size, 2048)) if rng.random() < 0.5 else rng.randrange(size)


def mutate(data, rng):
    """A few random edits: bit flips, special bytes and words, truncation, inserts, cuts."""
    if rng.random() < 0.03:
        return rng.randbytes(rng.choice((0, 1, 16, 1000, 20000)))
    data = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op, pos = rng.randrange(7), _offset(len(data), rng)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[min(pos, len(data) - 1)] = rng.choice(INTERESTING + (rng.randrange(256),))
        elif op == 2:
            word = rng.choice(INTERESTING_32).to_bytes(4, rng.choice(("little", "big")))
            data[pos:pos + 4] = word
        elif op == 3:
            del data[pos:]
        elif op == 4:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 64))
        elif op == 5:
            del data[pos:pos + rng.randrange(1, 256)]
        elif op == 6 and len(data) > 8:  # repeat a slice: duplicated markers and chunks
            start = rng.randrange(len(data) - 4)
            data[pos:pos] = data[start:start + rng.randrange(4, 128)]
    return bytes(data)


# --- seed inputs (valid files) ---------------------------------------------------------

def _sample_arrays(count=3):
    with h5data.H5Dataset(SAMPLE) as data:
        return [(data.image(i), data.label(i)) for i in range(count)]


def encode_image(image, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, **options)
    return buffer.getvalue()


def mat_bytes(variables, **options):
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, **options)
    return buffer.getvalue()


def _h5_bytes(images, labels, names, workdir):
    path = pathlib.Path(workdir) / "seed.h5"
    gzip = dict(compression="gzip", compression_opts=4)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(1,) + images.shape[1:], **gzip)
        f.create_dataset("labels", data=labels, chunks=(1,) + labels.shape[1:], **gzip)
        f.create_dataset("names", data=names, dtype=h5py.string_dtype("utf-8"))
        f.attrs["class_names"] = np.array(siftflow.CLASS_NAMES, dtype=h5py.string_dtype("utf-8"))
        f.attrs["num_classes"], f.attrs["void_label"] = 33, 255
    data = path.read_bytes()
    path.unlink()
    return data


def _palette_png(label):
    """A label map as a palette ("P") PNG, the way VOC stores them."""
    image = Image.fromarray(label, mode="L").convert("P")
    image.putpalette(list(range(256)) * 3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def seed_inputs(workdir):
    """Valid files per reader: {"jpeg": [(suffix, bytes)], "mat": [...], "hdf5": [...]}."""
    pairs = _sample_arrays()
    (image, label), (image2, _) = pairs[0], pairs[1]
    s = np.where(label == 255, 0, label.astype(np.float64) + 1)
    names = np.array(siftflow.CLASS_NAMES, dtype=object).reshape(1, -1)
    small = np.stack([p[0][:16, :16] for p in pairs]), np.stack([p[1][:16, :16] for p in pairs])
    return {
        "jpeg": [(".jpg", encode_image(image, format="JPEG", quality=90)),
                 (".jpg", encode_image(image2, format="JPEG", quality=75, progressive=True)),
                 (".png", encode_image(image, format="PNG"))],
        "mat": [(".mat", mat_bytes({"S": s, "names": names})),
                (".mat", mat_bytes({"S": s.astype(np.uint8)}, do_compression=True)),
                (".mat", mat_bytes({"S": s.astype(np.int16)}, format="4"))],
        "png": [(".png", encode_image(label, format="PNG")),
                (".png", _palette_png(label))],
        "hdf5": [(".h5", _h5_bytes(np.stack([image, image2]), np.stack([label, pairs[1][1]]),
                                   ["coast_a1", "forest_b2"], workdir)),
                 (".h5", _h5_bytes(*small, ["coast_a1", "forest_b2", "street_c3"], workdir))],
    }


def make_root(workdir, count=3):
    """A released-layout root of ``count`` real sample images and label maps: (root, names)."""
    root = pathlib.Path(workdir) / "siftflow"
    for sub in (siftflow.IMAGE_SUBDIR, siftflow.LABEL_SUBDIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    with h5data.H5Dataset(SAMPLE) as data:
        names = data.names[:count]
        for i, name in enumerate(names):
            siftflow.image_path(root, name).write_bytes(
                encode_image(data.image(i), format="JPEG", quality=90))
            s = np.where(data.label(i) == 255, 0, data.label(i).astype(np.float64) + 1)
            siftflow.label_path(root, name).write_bytes(mat_bytes({"S": s}))
    (root / "trainval.txt").write_text("".join(f"{n}\n" for n in names))
    return root, names
