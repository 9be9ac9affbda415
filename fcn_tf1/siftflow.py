"""SIFT Flow: the label contract, and reading the released layout.

The released ``SiftFlowDataset.zip`` (Liu, Yuen & Torralba) lays out one image
and one label map per name::

    ROOT/Images/spatial_envelope_256x256_static_8outdoorcategories/NAME.jpg         RGB 256x256
    ROOT/SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories/NAME.mat  S, names
    ROOT/trainval.txt, ROOT/test.txt   split lists, one NAME per line
    ROOT/classes.txt                   the class listing

NAME starts with its scene category (``coast_arnat59`` is a coast image).

Label contract (the one place it is stated; every module relies on it):
    The .mat variable ``S`` is a 256x256 class map, 0 = void (unlabeled) and
    1..33 = the 33 semantic classes. Training labels are uint8 with
    ``S == 0 -> 255`` (``VOID_LABEL``) and ``S == c -> c - 1`` for c in 1..33,
    i.e. classes 0..32. ``S`` may be stored in any integer-valued numeric
    type (float64 with integral values as released, uint8, int16, ...).
    Anything else is a :class:`~fcn_tf1.errors.DataError`: non-integer
    values, NaN/inf, negative values, values above 33, or a logical (bool),
    char (string), cell/struct (object), sparse or complex ``S``.

API::

    NUM_CLASSES, VOID_LABEL, IMAGE_SIZE, CATEGORIES, CLASS_NAMES, CLASS_COLORS
    image_path(root, name), label_path(root, name), category_of(name)
    labels_from_class_map(class_map, source)    the label contract on a raw ``S``
    read_image(path), read_label(path)          one released file -> uint8 arrays
    read_names(path), list_split(root, ...)     split lists and the files they name
    read_class_names(root)                      the 33 names, label order
    split_train_val(names, val_fraction)        the deterministic validation split
    decode_image(path, check_header)            any image file (from fcn_tf1.decoders)

Every reader raises ``DataError`` with one line, ``<full path>: <reason>``;
decoding the files safely is fcn_tf1.decoders' part.
"""
import hashlib
import pathlib

import numpy as np
import scipy.io

from fcn_tf1.decoders import check_mat5_types, decode_image, read_mat_class_map
from fcn_tf1.errors import ConfigError, DataError, reason

NUM_CLASSES = 33
VOID_LABEL = 255
IMAGE_SIZE = 256
CLASS_MAP_VARIABLE = "S"  # the class map in every label .mat file
CATEGORIES = ("coast", "forest", "highway", "insidecity", "mountain", "opencountry", "street",
              "tallbuilding")
# The official listing (classes.txt, semantic 1..33), used when a root has neither
# classes.txt nor a `names` field in its .mat files.
CLASS_NAMES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight",
    "sun", "tree", "window")
# Hand-picked so that the frequent SIFT Flow classes read at a glance (sky light
# blue, sea deep blue, tree dark green, grass green, road purple as in
# Cityscapes, building brick red) and every pair of classes stays apart: the
# smallest CIE76 distance between two entries is 21.6 (bridge / pole), and the
# darkest (rock) is 31.9 from the void black. Row i is label i (class i + 1 of
# the released classes.txt).
CLASS_COLORS = (
    (240, 110, 20),   # 0 awning: orange
    (255, 120, 200),  # 1 balcony: pink
    (0, 230, 230),    # 2 bird: cyan
    (255, 110, 110),  # 3 boat: salmon
    (100, 130, 160),  # 4 bridge: slate
    (160, 30, 30),    # 5 building: brick red
    (0, 90, 90),      # 6 bus: dark teal
    (0, 0, 230),      # 7 car: blue
    (255, 200, 215),  # 8 cow: light pink
    (255, 255, 255),  # 9 crosswalk: white
    (205, 165, 85),   # 10 desert: ochre
    (70, 0, 150),     # 11 door: indigo
    (205, 135, 105),  # 12 fence: tan
    (185, 205, 60),   # 13 field: yellow-green
    (50, 190, 50),    # 14 grass: green
    (110, 0, 70),     # 15 moon: plum
    (125, 95, 55),    # 16 mountain: earth brown
    (220, 20, 60),    # 17 person: crimson
    (140, 240, 140),  # 18 plant: light green
    (150, 150, 150),  # 19 pole: grey
    (40, 120, 200),   # 20 river: mid blue
    (128, 64, 128),   # 21 road: purple
    (75, 75, 75),     # 22 rock: dark grey
    (240, 220, 170),  # 23 sand: sand
    (15, 60, 130),    # 24 sea: deep blue
    (244, 35, 232),   # 25 sidewalk: magenta
    (230, 230, 0),    # 26 sign: yellow
    (135, 200, 245),  # 27 sky: sky blue
    (190, 120, 255),  # 28 staircase: lilac
    (255, 170, 0),    # 29 streetlight: amber
    (255, 255, 140),  # 30 sun: pale yellow
    (0, 110, 30),     # 31 tree: dark green
    (0, 200, 150),    # 32 window: turquoise
)
IMAGE_SUBDIR = "Images/spatial_envelope_256x256_static_8outdoorcategories"
LABEL_SUBDIR = "SemanticLabels/spatial_envelope_256x256_static_8outdoorcategories"


def image_path(root, name):
    """``ROOT/Images/.../NAME.jpg`` as a ``pathlib.Path``."""
    return pathlib.Path(root) / IMAGE_SUBDIR / f"{name}.jpg"


def label_path(root, name):
    """``ROOT/SemanticLabels/.../NAME.mat`` as a ``pathlib.Path``."""
    return pathlib.Path(root) / LABEL_SUBDIR / f"{name}.mat"


def category_of(name):
    """The scene category of an image name: its prefix before the first '_'."""
    return str(name).split("_", 1)[0]


def read_image(path):
    """Decodes one SIFT Flow JPEG completely (truncated or corrupt data raises).

    Args:
        path: the image file.

    Returns:
        uint8 [256, 256, 3] RGB array.

    Raises:
        DataError: missing, undecodable, not RGB, or not 256x256.
    """
    def check(image):
        mode, (width, height) = image.mode, image.size
        if mode != "RGB":
            kind = "grayscale" if mode in ("L", "LA", "I", "I;16", "1") else "not RGB"
            raise DataError(f"{path}: image mode {mode} ({kind}), expected RGB")
        if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"{path}: image is {width}x{height}, "
                            f"expected {IMAGE_SIZE}x{IMAGE_SIZE}")

    image = decode_image(path, check_header=check)
    check(image)  # a decoder may change its mind (e.g. a JPEG's mode after the first scan)
    return np.array(image, dtype=np.uint8)


_KIND_NAMES = {"b": "bool", "U": "string", "S": "string", "O": "cell/struct/object",
               "c": "complex"}


def labels_from_class_map(class_map, source):
    """Applies the label contract to a raw ``S`` array.

    Args:
        class_map: ``S`` as loaded, any integer-valued numeric dtype, [256, 256].
        source: the file it came from, for error messages.

    Returns:
        uint8 [256, 256]: 0..32 for classes 1..33, ``VOID_LABEL`` (255) for 0.

    Raises:
        DataError: wrong dtype or shape, non-integer, NaN, negative or > 33 values.
    """
    s = class_map
    if not isinstance(s, np.ndarray) or s.dtype.kind not in "iuf":
        dtype = getattr(s, "dtype", type(s).__name__)
        kind = _KIND_NAMES.get(getattr(dtype, "kind", ""), "not numeric")
        raise DataError(f"{source}: S has dtype {dtype} ({kind}), expected an integer-valued "
                        "numeric class map")
    if s.shape != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{source}: S has shape {s.shape}, expected ({IMAGE_SIZE}, {IMAGE_SIZE})")
    if s.dtype.kind == "f":
        if not np.isfinite(s).all():
            raise DataError(f"{source}: S contains NaN or infinite values")
        fractional = s[s != np.round(s)]
        if fractional.size:
            raise DataError(f"{source}: S has non-integer values (e.g. {fractional.flat[0]:g})")
    low, high = s.min(), s.max()
    if low < 0:
        raise DataError(f"{source}: S has negative values (min {low:g}), expected 0..{NUM_CLASSES}")
    if high > NUM_CLASSES:
        raise DataError(f"{source}: S has values above {NUM_CLASSES} (max {high:g})")
    s = s.astype(np.int16)  # exact now: integral and within 0..33
    return np.where(s == 0, VOID_LABEL, s - 1).astype(np.uint8)


def read_label(path):
    """Reads ``S`` from a SIFT Flow .mat file and applies the label contract.

    Args:
        path: the .mat file (MATLAB v5 or older).

    Returns:
        uint8 [256, 256]: classes 0..32, void 255.

    Raises:
        DataError: missing or unreadable file, no ``S``, or ``S`` breaking the contract.
    """
    path = pathlib.Path(path)
    return labels_from_class_map(read_mat_class_map(path, CLASS_MAP_VARIABLE), path)


def read_names(path):
    """Reads a list of image names, one per line (blank lines ignored).

    Args:
        path: a split list such as ``ROOT/trainval.txt``.

    Returns:
        list of str, in file order.

    Raises:
        DataError: missing/unreadable file, no names, a name with a path separator or
            whitespace, or a repeated name.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: names list not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable names list ({reason(err)})") from None
    names, first_line = [], {}
    for line_number, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        if "/" in name or "\\" in name or name.startswith(".") or len(name.split()) > 1:
            raise DataError(f"{path}: line {line_number}: {name!r} is not an image name")
        if name in first_line:
            raise DataError(f"{path}: line {line_number}: duplicate name {name!r} "
                            f"(first on line {first_line[name]})")
        first_line[name] = line_number
        names.append(name)
    if not names:
        raise DataError(f"{path}: empty names list")
    return names


def list_split(root, split=None, names_file=None):
    """The names of a split and their files, each checked to exist.

    Args:
        root: SIFT Flow root.
        split: split name, read from ``ROOT/SPLIT.txt`` (default "trainval").
        names_file: any names list instead (takes precedence over ``split``).

    Returns:
        (names, source, files): list of str; the split name or names-file path;
        list of (image path, label path) per name.

    Raises:
        DataError: missing root, list, image or label file; empty or malformed list.
        ConfigError: a split given as a path.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: SIFT Flow data directory not found")
    if names_file is not None:
        list_file, source = pathlib.Path(names_file), str(names_file)
    else:
        source = split or "trainval"
        if "/" in source or "\\" in source:
            raise ConfigError(f"--split {source!r}: a split name, not a path (use --names-file)")
        list_file = root / f"{source}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list not found (no {source}.txt in {root})")
    names = read_names(list_file)
    files = []
    for name in names:
        pair = (image_path(root, name), label_path(root, name))
        for path, kind in zip(pair, ("image", "label")):
            if not path.is_file():
                raise DataError(f"{path}: no such {kind} file (for {name!r} in {list_file})")
        files.append(pair)
    return names, source, files


def _names_from_classes_txt(path):
    """The 33 names of the "Semantic" section of classes.txt, or None."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    numbered, in_semantic = {}, False
    for line in lines:
        words = line.split()
        if words and words[0].startswith("Semantic"):
            in_semantic = True
        elif words and words[0].startswith("Geometric"):
            in_semantic = False
        elif in_semantic and len(words) >= 2 and words[0].isdigit():
            numbered[int(words[0])] = " ".join(words[1:])
    if sorted(numbered) != list(range(1, NUM_CLASSES + 1)):
        return None
    return [numbered[i] for i in range(1, NUM_CLASSES + 1)]


def _names_from_mat(root):
    """The 1x33 ``names`` cell of the first label file, or None."""
    label_files = sorted((pathlib.Path(root) / LABEL_SUBDIR).glob("*.mat"))[:1]
    for label_file in label_files:
        try:
            check_mat5_types(label_file, CLASS_MAP_VARIABLE)  # scipy.io would crash on some files
            cells = scipy.io.loadmat(label_file, variable_names=["names"]).get("names")
            names = [str(np.asarray(cell).ravel()[0]) for cell in np.asarray(cells).ravel()]
        except Exception:  # the names are decoration: any problem means "use the fallback"
            return None
        return names if len(names) == NUM_CLASSES else None
    return None


def read_class_names(root):
    """The 33 class names: from classes.txt, else a .mat ``names`` field, else ``CLASS_NAMES``.

    Returns:
        list of 33 str, index = training label.
    """
    root = pathlib.Path(root)
    names = _names_from_classes_txt(root / "classes.txt") or _names_from_mat(root)
    return list(names or CLASS_NAMES)


def split_train_val(names, val_fraction=0.1):
    """Carves a validation split out of trainval: deterministic, stratified, order-free.

    Per scene category (``category_of``), the names are ranked by the sha1 hex
    digest of the name; the first ``max(1, floor(n * val_fraction + 0.5))`` go
    to validation when the category has at least 2 images (capped at n - 1, so
    a category always keeps a training image). The result depends only on the
    set of names, never on their order or on a random seed. ``val_fraction == 0``
    puts everything in train. The official test split is never an input here:
    it is held back.

    Args:
        names: iterable of image names (distinct).
        val_fraction: float in [0, 1).

    Returns:
        (train_names, val_names): two disjoint sorted lists of str.

    Raises:
        ConfigError: val_fraction outside [0, 1).
        DataError: a repeated name.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction {val_fraction}: must be in [0, 1)")
    names = [str(name) for name in names]
    if len(set(names)) != len(names):
        raise DataError("split_train_val: the names are not distinct")
    by_category = {}
    for name in names:
        by_category.setdefault(category_of(name), []).append(name)
    train, val = [], []
    for members in by_category.values():
        ranked = sorted(members, key=lambda n: (hashlib.sha1(n.encode("utf-8")).hexdigest(), n))
        num_val = 0
        if val_fraction > 0 and len(ranked) >= 2:
            num_val = max(1, int(np.floor(len(ranked) * val_fraction + 0.5)))
            num_val = min(num_val, len(ranked) - 1)  # a category always keeps a training image
        val.extend(ranked[:num_val])
        train.extend(ranked[num_val:])
    return sorted(train), sorted(val)
