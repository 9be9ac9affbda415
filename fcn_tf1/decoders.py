"""Decoding untrusted input files into numpy, every failure one ``DataError`` line.

    decode_image(path, check_header=None)   -> a loaded PIL image (JPEG or PNG only)
    image_size(path)                        -> (width, height) from the header alone
    read_rgb(path, max_pixels=None)         -> uint8 [H, W, 3]: any JPEG/PNG, EXIF-rotated
    read_mat_class_map(path, variable)      -> the raw class map array of a .mat file
    check_mat5_types(path, variable)        raises DataError before scipy.io may crash

Nothing here knows a dataset's layout or label contract: a dataset module
(``fcn_tf1.siftflow``) checks sizes and applies its contract to what these
return. Messages read ``<full path>: <reason>``.
"""
import pathlib
import struct
import zlib

import numpy as np
import scipy.io
from PIL import Image, ImageOps, UnidentifiedImageError

from fcn_tf1.errors import DataError, reason


# Only these decoders ever see an input: Pillow would otherwise pick one by content, and
# some hand the file to other programs (EPS to Ghostscript) or to rarely used parsers.
IMAGE_FORMATS = ("JPEG", "PNG")


def decode_image(path, check_header=None):
    """Opens and fully decodes a JPEG or PNG file (whatever its name says).

    Args:
        path: the image file.
        check_header: optional callable(image) run on the opened, not yet decoded
            image (mode and size come from the header); it raises DataError to
            refuse the file before any pixel is decoded (a corrupt size field
            can claim millions of pixels).

    Returns:
        A loaded ``PIL.Image.Image`` (Pillow is lazy; loading now surfaces truncation here).

    Raises:
        DataError: missing file, not an image, corrupt or truncated data.
    """
    path = pathlib.Path(path)
    try:
        with Image.open(path, formats=list(IMAGE_FORMATS)) as image:
            if check_header is not None:
                check_header(image)
            image.load()
            return image.copy()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (corrupt, or not a JPEG or PNG "
                        "file)") from None
    except Exception as err:  # Pillow reports bad data as OSError, SyntaxError, ValueError, ...
        raise DataError(f"{path}: corrupt or truncated image ({reason(err)})") from None


# modes a JPEG or PNG decodes to that Pillow converts to RGB without losing range
_TO_RGB = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr",
                     "RGBa"})
_WIDE_GREY = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # 16-bit grey PNGs


class _HeaderRead(DataError):
    """Ends decode_image after the header (image_size): not an error."""


def image_size(path):
    """(width, height) of a JPEG or PNG from its header, no pixel decoded; DataError if bad."""
    sizes = []

    def stop(image):
        sizes.append(image.size)
        raise _HeaderRead(str(path))
    try:
        decode_image(path, check_header=stop)
    except _HeaderRead:
        pass
    return sizes[0]


def read_rgb(path, max_pixels=None, upright=True):
    """An image to predict on: any JPEG or PNG -> uint8 [H, W, 3] RGB, upright.

    The EXIF orientation is applied (a phone photo is stored sideways with a
    tag saying so), grey, palette, alpha and CMYK images are converted to RGB,
    16-bit grey is scaled to 8 bit (65535 -> 255, not clipped at 255).

    Args:
        path: the image file.
        max_pixels: refuse larger images before decoding them (None: no limit).
        upright: apply the EXIF orientation (False for training images, whose label
            maps are aligned with the stored pixels).

    Raises:
        DataError: missing, not JPEG/PNG, corrupt, empty, too large, or a mode
            that has no RGB meaning.
    """
    path = pathlib.Path(path)

    def check(image):
        if image.width < 1 or image.height < 1:
            raise DataError(f"{path}: empty image")
        if max_pixels is not None and image.width * image.height > max_pixels:
            raise DataError(f"{path}: image is {image.width}x{image.height}, more than the "
                            f"{max_pixels / 1e6:.1f} Mpx allowed; downscale it first")
    image = decode_image(path, check_header=check)
    try:
        image = ImageOps.exif_transpose(image) if upright else image
    except Exception as err:  # a damaged EXIF block: Pillow raises many kinds
        raise DataError(f"{path}: unreadable EXIF orientation ({reason(err)})") from None
    if image.mode in _WIDE_GREY:
        grey = np.asarray(image, dtype=np.int64).clip(0, 65535)
        grey = ((grey * 255 + 32767) // 65535).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode not in _TO_RGB:
        raise DataError(f"{path}: image mode {image.mode} is not supported (expected RGB, "
                        "grey, palette or 16-bit grey)")
    try:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as err:
        raise DataError(f"{path}: cannot convert image mode {image.mode} to RGB "
                        f"({reason(err)})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{path}: decoded to shape {rgb.shape}, expected [H, W, 3]")
    return np.ascontiguousarray(rgb)


def read_mat_class_map(path, variable):
    """Reads one class map variable from a MATLAB .mat label file, as stored.

    Args:
        path: the .mat file (MATLAB v5 or older).
        variable: the name of the class map variable (``"S"`` in SIFT Flow).

    Returns:
        numpy array as loaded by scipy.io (any dtype and shape: the caller's
        label contract checks them); never a MATLAB logical.

    Raises:
        DataError: missing or unreadable file, no such variable, a logical or
            sparse class map.
    """
    path = pathlib.Path(path)
    try:
        check_mat5_types(path, variable)
        mat = scipy.io.loadmat(path, variable_names=[variable])
        # loadmat returns MATLAB logicals as uint8; only the header tells them apart.
        logical = variable in mat and mat[variable].dtype == np.uint8 and any(
            name == variable and cls == "logical" for name, _, cls in scipy.io.whosmat(path))
    except (FileNotFoundError, IsADirectoryError):
        raise DataError(f"{path}: no such label file") from None
    except DataError:
        raise
    except Exception as err:  # scipy raises ValueError, MatReadError, NotImplementedError (v7.3)...
        raise DataError(f"{path}: not a readable MATLAB .mat file ({reason(err)})") from None
    if variable not in mat:
        raise DataError(f"{path}: no variable '{variable}'")
    if logical:
        raise DataError(f"{path}: {variable} has dtype bool (MATLAB logical), expected an "
                        "integer-valued numeric class map")
    return mat[variable]


# The data element types of MATLAB v5 files. Handed a tag of any other type, scipy.io's
# reader (1.17) indexes a missing table entry and the process dies (SIGSEGV), so
# check_mat5_types walks the tags first, inflating compressed variables.
_MAT5_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, 14, 15, 16, 17, 18})
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MX_SPARSE = 5  # the array class byte; a dense class map relabelled sparse also crashes the reader
_MAT5_MAX_INFLATED = 64 * 2**20  # a 256x256 label map takes 0.5 MB as float64
_MAT5_MAX_DEPTH = 16


def check_mat5_types(path, variable):
    """Raises DataError if a MATLAB v5 file would crash scipy.io's reader.

    That is: a data element of unknown type anywhere (compressed variables
    inflated and walked too), nesting deeper than 16, a compressed variable
    inflating to more than 64 MB, or ``variable`` stored as a sparse matrix.
    Files that are not v5 (v4, v7.3 = HDF5, garbage) pass: scipy's own checks
    report them.

    Args:
        path: the .mat file.
        variable: the class map variable whose matrices must be dense.

    Raises:
        DataError: one of the above; OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        data = f.read()
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if len(data) < 128 or order is None or int.from_bytes(data[124:126], "little"
                                                          if order == "<" else "big") != 0x0100:
        return
    _check_elements(path, data, 128, len(data), order, variable.encode("utf-8"), depth=0,
                    in_variable=False)


def _element(data, pos, order):
    """(type, size, data start, next element) of the data element tag at ``pos``."""
    mtype, nbytes = struct.unpack_from(order + "II", data, pos)
    if mtype >> 16:  # small element: type and size in 4 bytes, data in the next 4
        return mtype & 0xFFFF, mtype >> 16, pos + 4, pos + 8
    return mtype, nbytes, pos + 8, pos + 8 + nbytes + (
        0 if mtype == _MI_COMPRESSED else -nbytes % 8)


def _matrix_class_and_name(data, body, end, order):
    """The array class and the name of the miMATRIX whose data starts at ``body``."""
    try:
        _, _, flags, pos = _element(data, body, order)  # array flags: class in the low byte
        array_class = struct.unpack_from(order + "I", data, flags)[0] & 0xFF
        _, _, _, pos = _element(data, pos, order)  # dimensions
        _, size, name, _ = _element(data, pos, order)
        return array_class, bytes(data[name:min(name + size, end)])
    except struct.error:  # truncated: scipy reports it
        return None, b""


def _check_elements(path, data, start, end, order, variable, depth, in_variable):
    pos = start
    while pos + 8 <= end:
        mtype, nbytes, body, after = _element(data, pos, order)
        if mtype not in _MAT5_TYPES:
            raise DataError(f"{path}: not a readable MATLAB .mat file (data element of "
                            f"unknown type {mtype} at byte {pos})")
        if depth > _MAT5_MAX_DEPTH:
            raise DataError(f"{path}: not a readable MATLAB .mat file (nested too deep)")
        if mtype == _MI_COMPRESSED:
            inflater = zlib.decompressobj()
            try:
                inner = inflater.decompress(data[body:body + nbytes], _MAT5_MAX_INFLATED)
            except zlib.error as err:
                raise DataError(f"{path}: not a readable MATLAB .mat file "
                                f"(compressed data: {reason(err)})") from None
            if inflater.unconsumed_tail:
                raise DataError(f"{path}: a compressed variable inflates to more than "
                                f"{_MAT5_MAX_INFLATED // 2**20} MB")
            _check_elements(path, inner, 0, len(inner), order, variable, depth + 1, in_variable)
        elif mtype == _MI_MATRIX:
            matrix_end = min(body + nbytes, end)
            array_class, name = _matrix_class_and_name(data, body, matrix_end, order)
            inside = in_variable or name == variable
            if inside and array_class == _MX_SPARSE:
                raise DataError(f"{path}: {variable.decode('utf-8')} is a sparse matrix, "
                                "expected a dense integer-valued numeric class map")
            _check_elements(path, data, body, matrix_end, order, variable, depth + 1, inside)
        pos = after
