"""Dataset descriptors: what the project needs to know about a dataset's labels.

A descriptor names the classes, says which raw label values are void, how a
raw value becomes a class (an offset, and an optional remapping of several raw
values to one class or to void), the class colours, the label file format and
the folder layout. ``fcn-tf1 prepare`` stores it in the HDF5 file; from then
on training, eval, predict, export, compare and the pictures read the class
count, names, colours and void value from the data (or the run), never from a
constant.

Every prepared file holds training labels ``0..C-1`` and void ``VOID`` (255),
whatever the raw encoding was: SIFT Flow's ``.mat`` 1..33 with 0 = void,
CamVid's grey PNGs 0..10 with 11 = void, VOC's palette indices 0..20 with 255.

API::

    VOID                                   255, the void label of every prepared file
    Descriptor(name, class_names, ...)     frozen; .num_classes, .lut(), .to_json()
    BUILT_IN                               {"siftflow", "camvid", "voc"} -> Descriptor
    from_json(text, source), load(path)    a user's descriptor file (JSON, see docs/DATASETS.md)
    from_options(classes, void, ...)       a descriptor from command-line words
    voc_palette(n)                         the Pascal VOC colour map (bit-interleaved)
    class_set(C, names, colors), run_classes(config)   -> (names, palette) to draw with

A descriptor file::

    {"name": "roads", "classes": ["background", "road", "car"], "void": [255],
     "colors": [[0, 0, 0], [128, 64, 128], [0, 0, 142]],       (optional)
     "remap": {"7": 1, "8": "void"},                           (optional: raw -> class / void)
     "label_offset": 0}                                        (optional: raw value of class 0)
"""
import dataclasses
import functools
import json
import pathlib
from typing import Optional, Tuple

import numpy as np

from fcn_tf1 import siftflow
from fcn_tf1.errors import ConfigError, DataError, reason

VOID = siftflow.VOID_LABEL  # the void value of every prepared file: SIFT Flow's 255
RAW_VALUES = 1 << 16  # label PNGs are 8- or 16-bit
INVALID = -1  # a raw value that is neither a class nor void
LAYOUTS = ("siftflow", "segnet", "voc", "folders")
LABEL_FORMATS = ("mat", "png")
MAX_CLASSES = VOID  # classes 0..254: 255 is void


def voc_palette(n):
    """The Pascal VOC colour map (also the palette of its label PNGs): uint8 [n, 3]."""
    out = np.zeros((n, 3), np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        out[index] = (r, g, b)
    return out


@dataclasses.dataclass(frozen=True)
class Descriptor:
    """Everything the project needs to know about a dataset's labels.

    Attributes:
        name: short name, part of prepared file names ("camvid").
        class_names: tuple of str, index = training label.
        void_values: raw label values that mean void (excluded from loss and metrics).
        label_offset: the raw value of class 0 (SIFT Flow: 1, since 0 is void).
        remap: ((raw, class index or None for void), ...), applied before the offset rule.
        colors: ((r, g, b), ...) per class, or None (a VOC-style palette is used).
        label_format: "mat" (SIFT Flow's S variable) or "png" (one index per pixel).
        layout: "siftflow", "segnet", "voc" or "folders" (fcn_tf1.layouts).
    """
    name: str
    class_names: Tuple[str, ...]
    void_values: Tuple[int, ...] = ()
    label_offset: int = 0
    remap: Tuple[Tuple[int, Optional[int]], ...] = ()
    colors: Optional[Tuple[Tuple[int, int, int], ...]] = None
    label_format: str = "png"
    layout: str = "folders"

    def __post_init__(self):
        problems = []
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            problems.append(f"name {self.name!r} must be letters, digits, '-', '_' or '.'")
        if not 1 <= len(self.class_names) <= MAX_CLASSES:
            problems.append(f"{len(self.class_names)} classes: need 1..{MAX_CLASSES}")
        if len(set(self.class_names)) != len(self.class_names):
            problems.append("class names repeat")
        raw = [*self.void_values, *(r for r, _ in self.remap)]
        if any(not 0 <= v < RAW_VALUES for v in raw) or not 0 <= self.label_offset < RAW_VALUES:
            problems.append(f"raw label values must be in 0..{RAW_VALUES - 1}")
        if any(c is not None and not 0 <= c < len(self.class_names) for _, c in self.remap):
            problems.append(f"remap targets must be classes 0..{len(self.class_names) - 1} "
                            "or void")
        if self.colors is not None and (len(self.colors) != len(self.class_names) or any(
                len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.colors)):
            problems.append(f"colors must be {len(self.class_names)} [r, g, b] triples of 0..255")
        if self.label_format not in LABEL_FORMATS:
            problems.append(f"label_format {self.label_format!r} not one of "
                            + ", ".join(LABEL_FORMATS))
        if self.layout not in LAYOUTS:
            problems.append(f"layout {self.layout!r} not one of {', '.join(LAYOUTS)}")
        if problems:
            raise ConfigError(f"dataset {self.name!r}: " + "; ".join(problems))

    @property
    def num_classes(self):
        return len(self.class_names)

    def palette(self):
        """uint8 [num_classes, 3]: the class colours (a VOC-style palette when none are given)."""
        if self.colors is not None:
            return np.array(self.colors, np.uint8)
        return voc_palette(self.num_classes)

    def lut(self):
        """int16 [65536]: raw label value -> class (0..C-1), VOID, or INVALID."""
        return _lut(self)

    def describe_raw(self):
        """The raw values this dataset accepts, in words (for error messages)."""
        first, last = self.label_offset, self.label_offset + self.num_classes - 1
        words = f"classes {first}..{last}"
        if self.void_values:
            words += " or void " + "/".join(str(v) for v in self.void_values)
        if self.remap:
            words += " or a remapped value (" + ", ".join(str(r) for r, _ in self.remap) + ")"
        return words

    def to_json(self):
        return json.dumps({
            "name": self.name, "classes": list(self.class_names),
            "void": list(self.void_values), "label_offset": self.label_offset,
            "remap": {str(raw): ("void" if c is None else c) for raw, c in self.remap},
            "colors": None if self.colors is None else [list(c) for c in self.colors],
            "label_format": self.label_format, "layout": self.layout}, sort_keys=True)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@functools.lru_cache(maxsize=8)
def _lut(descriptor):
    table = np.full(RAW_VALUES, INVALID, np.int16)
    first = descriptor.label_offset
    table[first:first + descriptor.num_classes] = np.arange(descriptor.num_classes)
    table[list(descriptor.void_values)] = VOID
    for raw, target in descriptor.remap:
        table[raw] = VOID if target is None else target
    table.flags.writeable = False
    return table


def _int(value, what, source):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: {what} must be an integer, got {value!r}")
    return value


def from_json(text, source="descriptor"):
    """A Descriptor from the JSON of a descriptor file (see the module docstring).

    Raises:
        ConfigError: one line naming ``source`` and the problem.
    """
    try:
        values = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"{source}: not valid JSON ({reason(err, 200)})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    known = {"name", "classes", "void", "label_offset", "remap", "colors", "label_format",
             "layout"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown keys {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(known))})")
    classes = values.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise ConfigError(f"{source}: 'classes' must be a list of class names")
    void = values.get("void", [])
    void = [void] if isinstance(void, int) and not isinstance(void, bool) else void
    if not isinstance(void, list):
        raise ConfigError(f"{source}: 'void' must be a raw label value or a list of them")
    remap = values.get("remap") or {}
    if not isinstance(remap, dict):
        raise ConfigError(f"{source}: 'remap' must be an object of raw value -> class or 'void'")
    pairs = []
    for raw, target in remap.items():
        if not raw.isdigit():
            raise ConfigError(f"{source}: remap key {raw!r} is not a raw label value")
        if target == "void":
            target = None
        elif isinstance(target, str) and target in classes:
            target = classes.index(target)
        else:
            target = _int(target, f"remap[{raw}]", source)
        pairs.append((int(raw), target))
    colors = values.get("colors")
    if colors is not None and (not isinstance(colors, list) or not all(
            isinstance(c, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                        for v in c) for c in colors)):
        raise ConfigError(f"{source}: 'colors' must be a list of [r, g, b] integer triples")
    name = values.get("name", pathlib.Path(str(source)).stem)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: 'name' must be a string")
    try:
        return Descriptor(
            name=name, class_names=tuple(classes),
            void_values=tuple(_int(v, "void", source) for v in void),
            label_offset=_int(values.get("label_offset", 0), "label_offset", source),
            remap=tuple(sorted(pairs)),
            colors=None if colors is None else tuple(tuple(c) for c in colors),
            label_format=values.get("label_format", "png"),
            layout=values.get("layout", "folders"))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load(path):
    """A Descriptor from a JSON descriptor file; ConfigError naming the file."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the dataset descriptor ({reason(err)})") from None
    return from_json(text, source=str(path))


def from_options(classes, void=(), name="custom", layout="folders"):
    """A Descriptor from command-line words: ``classes`` "a,b,c" or a classes file, ``void``
    a comma-separated list of raw values."""
    path = pathlib.Path(classes)
    if "," not in classes and path.is_file():
        class_names = read_classes_file(path)
    else:
        class_names = [c.strip() for c in classes.split(",") if c.strip()]
    try:
        void_values = tuple(int(v) for v in str(void).split(",") if v.strip()) \
            if not isinstance(void, (tuple, list)) else tuple(void)
    except ValueError:
        raise ConfigError(f"--void {void!r}: expected raw label values such as 255 or 11,255") \
            from None
    return Descriptor(name=name, class_names=tuple(class_names), void_values=void_values,
                      layout=layout)


def read_classes_file(path):
    """Class names from a text file, one per line, optionally "INDEX NAME" (indices 0..C-1
    in order, as CamVid's classes.txt); DataError naming the file otherwise."""
    path = pathlib.Path(path)
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: unreadable class list ({reason(err)})") from None
    lines = [words for words in lines if words]
    if not lines:
        raise DataError(f"{path}: empty class list")
    if all(len(words) >= 2 and words[0].isdigit() for words in lines):
        if [int(words[0]) for words in lines] != list(range(len(lines))):
            raise DataError(f"{path}: class indices must run 0..{len(lines) - 1} in order")
        return [" ".join(words[1:]) for words in lines]
    return [" ".join(words) for words in lines]


SIFTFLOW = Descriptor(
    name="siftflow", class_names=siftflow.CLASS_NAMES, void_values=(0,), label_offset=1,
    colors=siftflow.CLASS_COLORS, label_format="mat", layout="siftflow")
# The 11-class grouping of SegNet's CamVid; colours as in SegNet's tutorial.
CAMVID = Descriptor(
    name="camvid",
    class_names=("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence",
                 "car", "pedestrian", "bicyclist"),
    void_values=(11,),
    colors=((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
            (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
            (0, 128, 192)),
    layout="segnet")
VOC = Descriptor(
    name="voc",
    class_names=("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
                 "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
                 "pottedplant", "sheep", "sofa", "train", "tvmonitor"),
    void_values=(255,), colors=tuple(tuple(int(v) for v in c) for c in voc_palette(21)),
    layout="voc")
BUILT_IN = {d.name: d for d in (SIFTFLOW, CAMVID, VOC)}


def class_set(num_classes, class_names=None, class_colors=None):
    """(names, uint8 [C, 3] palette) of a run's classes; a run recorded without them (written
    before data files carried a class set) is SIFT Flow's when it has its 33 classes."""
    legacy = SIFTFLOW if num_classes == SIFTFLOW.num_classes else None
    names = list(class_names or (legacy.class_names if legacy else
                                 [f"class_{i}" for i in range(num_classes)]))
    if class_colors is not None:
        colors = np.asarray(class_colors)
        if colors.size and (colors.min() < 0 or colors.max() > 255):
            raise ValueError(f"class colours outside 0..255 (min {colors.min()}, "
                             f"max {colors.max()})")
        return names, colors.astype(np.uint8)
    return names, legacy.palette() if legacy else voc_palette(num_classes)


def run_classes(config):
    """class_set of a RunConfig."""
    return class_set(config.num_classes, config.class_names, config.class_colors)


def built_in(name):
    """The built-in descriptor ``name``; ConfigError listing the choices otherwise."""
    if name not in BUILT_IN:
        raise ConfigError(f"--dataset {name}: unknown; choose one of {', '.join(BUILT_IN)} "
                          "(or --descriptor FILE.json for your own)")
    return BUILT_IN[name]
