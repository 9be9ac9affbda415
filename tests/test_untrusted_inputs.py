"""Untrusted input files: images decoded only as JPEG/PNG, every mode made RGB correctly,
EXIF orientation applied; HDF5 names that point outside the file refused."""
import h5py
import numpy as np
import pytest
from PIL import Image

from fcn_tf1 import decoders, h5data
from fcn_tf1.errors import DataError


def _save(path, image, **options):
    image.save(path, **options)
    return path


def test_postscript_named_jpg_is_never_decoded(tmp_path, monkeypatch):
    """An EPS file would go to Ghostscript: it is refused before any decoder but JPEG/PNG."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    from PIL import EpsImagePlugin
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open",
                        lambda self: pytest.fail("the EPS decoder was tried"))
    with pytest.raises(DataError, match=r"photo.jpg: not a readable image \(corrupt, or not a "
                                        r"JPEG or PNG file\)"):
        decoders.read_rgb(path)
    gif = _save(tmp_path / "anim.png", Image.new("RGB", (4, 4)), format="GIF")
    with pytest.raises(DataError, match="not a JPEG or PNG"):
        decoders.read_rgb(gif)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    grey = np.array([[0, 257, 32896], [65535, 1000, 65280]], np.uint16)
    path = _save(tmp_path / "deep.png", Image.fromarray(grey))
    assert Image.open(path).mode.startswith("I")
    rgb = decoders.read_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[:, :, 0].tolist() == [[0, 1, 128], [255, 4, 254]]
    assert (rgb[:, :, 0] == rgb[:, :, 2]).all()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "1", "CMYK"])
def test_other_modes_become_rgb(tmp_path, mode):
    image = Image.new(mode, (5, 3))
    path = _save(tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}", image,
                 format="JPEG" if mode == "CMYK" else "PNG")
    rgb = decoders.read_rgb(path)
    assert rgb.shape == (3, 5, 3) and rgb.dtype == np.uint8


def test_exif_orientation_is_applied(tmp_path):
    """A 4x2 landscape stored with orientation 6 (rotate 90 clockwise to view): 2x4 portrait."""
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[0, 0] = 255  # top-left as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path = _save(tmp_path / "phone.png", image, format="PNG", exif=exif)
    rgb = decoders.read_rgb(path)
    assert rgb.shape == (4, 2, 3)
    assert rgb[0, 1].tolist() == [255, 255, 255]  # stored top-left is now top-right


def test_size_limit_is_checked_before_decoding(tmp_path):
    path = _save(tmp_path / "big.png", Image.new("RGB", (100, 100)), format="PNG")
    with pytest.raises(DataError, match="big.png: image is 100x100, more than"):
        decoders.read_rgb(path, max_pixels=5000)
    assert decoders.read_rgb(path, max_pixels=10000).shape == (100, 100, 3)


# --- HDF5 -----------------------------------------------------------------------------

def _valid_h5(path, images=None):
    images = np.zeros((2, 8, 8, 3), np.uint8) if images is None else images
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=np.zeros((2, 8, 8), np.uint8))
        f.create_dataset("names", data=["a_1", "b_2"], dtype=h5py.string_dtype("utf-8"))
    return path


def test_plain_file_still_reads(tmp_path):
    with h5data.H5Dataset(_valid_h5(tmp_path / "ok.h5")) as data:
        assert len(data) == 2


def _rewrite(path, key, make):
    with h5py.File(path, "r+") as f:
        del f[key]
        make(f)


@pytest.mark.parametrize("kind, message", [
    ("external storage", "'images' keeps its data in external files"),
    ("virtual", "'images' is a virtual dataset"),
    ("soft link", "'images' is a soft link"),
    ("external link", "'images' is an external link")])
def test_hdf5_names_pointing_outside_the_file_are_refused(tmp_path, kind, message):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 8)
    other = _valid_h5(tmp_path / "other.h5")
    path = _valid_h5(tmp_path / "data.h5")
    shape = (2, 8, 8, 3)

    def make(f):
        if kind == "external storage":
            f.create_dataset("images", shape, np.uint8, external=[(str(secret), 0, 384)])
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape, np.uint8)
            layout[:] = h5py.VirtualSource(str(other), "images", shape)
            f.create_virtual_dataset("images", layout)
        elif kind == "soft link":
            f.create_dataset("hidden", data=np.zeros(shape, np.uint8))
            f["images"] = h5py.SoftLink("/hidden")
        else:
            f["images"] = h5py.ExternalLink(str(other), "images")
    _rewrite(path, "images", make)
    with pytest.raises(DataError, match=f"data.h5: {message}") as caught:
        h5data.H5Dataset(path)
    assert "\n" not in str(caught.value)
