"""Where a dataset's files are: the folder layouts ``fcn-tf1 prepare`` reads, and one pair read.

Layouts (``detect`` recognises the first three from their folders)::

    siftflow  ROOT/Images/.../NAME.jpg + SemanticLabels/.../NAME.mat, ROOT/SPLIT.txt of names
    segnet    ROOT/train.txt, val.txt: "<image> <label>" per line (CamVid as SegNet ships it;
              absolute paths of the original release are looked up under ROOT)
    voc       ROOT/JPEGImages/NAME.jpg + SegmentationClass/NAME.png,
              ROOT/ImageSets/Segmentation/SPLIT.txt of names
    folders   --images DIR + --labels DIR (label = same name, .png), or --pairs FILE

The list-file layouts default to the split "train+val": both lists in one file,
each image marked official validation or not, so training validates on the val
list instead of carving images out of train. SIFT Flow defaults to trainval
(the validation images are carved from it; its test list is held back).

API::

    Listing(names, pairs, source, validation)
    detect(root)                                   -> layout name
    default_split(descriptor)                      -> "trainval" (SIFT Flow) or "train+val"
    descriptor_for(root, dataset, descriptor_file, classes, void)   -> Descriptor
    list_pairs(root, descriptor, split, ...)       -> Listing, every file checked to exist
    read_pair(descriptor, image_path, label_path)  -> (uint8 [H, W, 3], uint8 [H, W])
    read_label_png(path, descriptor)               -> uint8 [H, W]: classes, VOID
"""
import collections
import dataclasses
import pathlib
from typing import List, Optional

import numpy as np

from fcn_tf1 import datasets, siftflow
from fcn_tf1.decoders import decode_image, read_rgb
from fcn_tf1.errors import ConfigError, DataError, reason

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VOC_SPLITS = "ImageSets/Segmentation"
BOTH = "train+val"
_INDEX_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")


@dataclasses.dataclass(frozen=True)
class Listing:
    """What prepare reads: names, (image, label) paths, where the list came from, and
    which images are official validation images (None: carve them later)."""
    names: List[str]
    pairs: List[tuple]
    source: str
    validation: Optional[List[bool]] = None


def detect(root):
    """The layout of the dataset folder ``root``; DataError when none is recognised."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found")
    if (root / "Images").is_dir() and (root / "SemanticLabels").is_dir():
        return "siftflow"
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return "voc"
    if (root / "train.txt").is_file() and any(
            (root / d).is_dir() for d in ("trainannot", "valannot", "testannot")):
        return "segnet"
    raise DataError(f"{root}: not a known dataset layout (SIFT Flow's Images/ + SemanticLabels/, "
                    "VOC's JPEGImages/ + SegmentationClass/, SegNet's train.txt + trainannot/); "
                    "for your own folders pass --images DIR --labels DIR (docs/DATASETS.md)")


def descriptor_for(root=None, dataset=None, descriptor_file=None, classes=None, void=None):
    """The Descriptor of a prepare: a descriptor file, ``--classes``/``--void``, a built-in
    ``--dataset`` name, or (none given) the built-in one of ``root``'s detected layout."""
    if sum(x is not None for x in (dataset, descriptor_file, classes)) > 1:
        raise ConfigError("say what the labels mean once: --dataset, --descriptor or --classes")
    if descriptor_file is not None or classes is not None:
        if void is not None and classes is None:
            raise ConfigError("--void goes with --classes (a --descriptor file says its void)")
        given = (datasets.load(descriptor_file) if descriptor_file is not None
                 else datasets.from_options(classes, void if void is not None else ()))
        return _with_layout(given, root)
    if void is not None:
        raise ConfigError("--void needs --classes (or a --descriptor file)")
    if dataset is not None:
        return datasets.built_in(dataset)
    if root is None:
        raise ConfigError("your own folders need their classes: --classes a,b,c (and --void V) "
                          "or --descriptor FILE.json")
    layout = detect(root)
    if layout == "siftflow":
        return datasets.SIFTFLOW
    if layout == "voc":
        return datasets.VOC
    classes_txt = pathlib.Path(root) / "classes.txt"
    if classes_txt.is_file():
        names = tuple(n for n in datasets.read_classes_file(classes_txt)  # "11 void (...)"
                      if n.split()[0].lower() not in ("void", "unlabelled", "unlabeled"))
        if names != datasets.CAMVID.class_names:
            raise ConfigError(f"{classes_txt}: names other classes than CamVid's; describe the "
                              "dataset with --descriptor FILE.json (docs/DATASETS.md)")
    return datasets.CAMVID


def _with_layout(descriptor, root):
    """A user's descriptor laid out like ``root`` (detected) when it names no layout."""
    if root is None or descriptor.layout != "folders":
        return descriptor
    layout = detect(root)
    if layout == "siftflow":
        raise ConfigError(f"{root}: SIFT Flow's .mat labels have their own classes; drop "
                          "--classes / --descriptor (or --dataset siftflow)")
    return descriptor.replace(layout=layout)


def _read_pair_list(list_file, root):
    """(names, pairs) of a "<image> <label>" list; absolute paths of another machine
    (SegNet's /SegNet/CamVid/...) are looked up under ``root`` by their last two parts."""
    try:
        lines = pathlib.Path(list_file).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{list_file}: list of pairs not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{list_file}: unreadable list of pairs ({reason(err)})") from None
    names, pairs, first_line = [], [], {}
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        if len(words) != 2:
            raise DataError(f"{list_file}: line {number}: expected '<image> <label>', "
                            f"got {line.strip()[:80]!r}")
        pair = []
        for word in words:
            path = pathlib.Path(word)
            if not path.is_absolute():
                path = pathlib.Path(root) / path
            elif not path.exists():
                path = pathlib.Path(root).joinpath(*path.parts[-2:])
            pair.append(path)
        name = pair[0].stem
        if name in first_line:
            raise DataError(f"{list_file}: line {number}: image name {name!r} repeats "
                            f"(first on line {first_line[name]})")
        first_line[name] = number
        names.append(name)
        pairs.append(tuple(pair))
    if not names:
        raise DataError(f"{list_file}: empty list of pairs")
    return names, pairs


def default_split(descriptor):
    """The split a prepare reads when none is named: SIFT Flow's trainval, else train+val."""
    return "trainval" if descriptor.layout == "siftflow" else BOTH


def _split_lists(root, layout, split):
    """[(split name, list file)] of ``split`` ("train+val" = both lists)."""
    parts = ["train", "val"] if split == BOTH else [split]
    for part in parts:
        if not part or "/" in part or "\\" in part:
            raise ConfigError(f"--split {split!r}: a split name, not a path")
    folder = pathlib.Path(root) / (VOC_SPLITS if layout == "voc" else "")
    return [(part, folder / f"{part}.txt") for part in parts]


def _listed(root, descriptor, split, names_file):
    layout = descriptor.layout
    if layout == "siftflow":
        names, source, pairs = siftflow.list_split(root, split, names_file)
        return Listing(names, pairs, source)
    if names_file is not None:
        lists = [(str(names_file), pathlib.Path(names_file))]
    else:
        lists = _split_lists(root, layout, split or BOTH)
    names, pairs, validation = [], [], []
    for part, list_file in lists:
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list not found (split {part!r} of {root})")
        if layout == "segnet":
            part_names, part_pairs = _read_pair_list(list_file, root)
        else:
            part_names = siftflow.read_names(list_file)
            part_pairs = [(pathlib.Path(root) / "JPEGImages" / f"{n}.jpg",
                           pathlib.Path(root) / "SegmentationClass" / f"{n}.png")
                          for n in part_names]
        names += part_names
        pairs += part_pairs
        validation += [part == "val"] * len(part_names)
    repeated = [n for n, count in collections.Counter(names).items() if count > 1]
    if repeated:
        raise DataError(f"{root}: image {repeated[0]!r} is in more than one list")
    source = names_file if names_file is not None else (split or BOTH)
    return Listing(names, pairs, str(source),
                   validation if len(lists) > 1 else None)


def _from_folders(images, labels):
    images, labels = pathlib.Path(images), pathlib.Path(labels)
    for folder, what in ((images, "--images"), (labels, "--labels")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} directory not found")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{images}: no images (.jpg, .jpeg, .png)")
    names, pairs = [], []
    for image in files:
        label = labels / f"{image.stem}.png"
        if not label.is_file():
            lossy = [p for p in labels.glob(f"{image.stem}.*")
                     if p.suffix.lower() in (".jpg", ".jpeg")]
            why = (f"{lossy[0]} is a JPEG: labels need a lossless format (PNG)" if lossy
                   else f"expected {label}")
            raise DataError(f"{image}: no label for this image ({why})")
        if image.stem in names:
            raise DataError(f"{image}: another image in {images} has the name {image.stem!r}")
        names.append(image.stem)
        pairs.append((image, label))
    return Listing(names, pairs, f"folders {images} + {labels}")


def list_pairs(root, descriptor, split=None, names_file=None, pairs_file=None, images=None,
               labels=None, limit_per_category=None):
    """The images and labels to prepare, each file checked to exist.

    Raises:
        DataError: missing folder, list or file, an empty split, a lossy label.
        ConfigError: contradictory options.
    """
    if images is not None or labels is not None:
        if images is None or labels is None:
            raise ConfigError("--images and --labels go together")
        listing = _from_folders(images, labels)
    elif pairs_file is not None:
        names, pairs = _read_pair_list(pairs_file, pathlib.Path(pairs_file).parent)
        listing = Listing(names, pairs, str(pairs_file))
    else:
        if root is None:
            raise ConfigError("say where the data is: --data-dir ROOT, --images DIR --labels "
                              "DIR, or --pairs FILE")
        listing = _listed(root, descriptor, split, names_file)
    if limit_per_category is not None:
        listing = _limited(listing, limit_per_category)
    for name, pair in zip(listing.names, listing.pairs):
        for path, kind in zip(pair, ("image", "label")):
            if not path.is_file():
                raise DataError(f"{path}: no such {kind} file (for {name!r} of {listing.source})")
    return listing


def _limited(listing, limit):
    """The first ``limit`` names of each category (siftflow.category_of) of a listing."""
    if limit < 1:
        raise ConfigError(f"--limit-per-category {limit}: must be >= 1")
    seen, keep = collections.Counter(), []
    for i, name in enumerate(listing.names):
        seen[siftflow.category_of(name)] += 1
        if seen[siftflow.category_of(name)] <= limit:
            keep.append(i)
    validation = None if listing.validation is None else [listing.validation[i] for i in keep]
    return Listing([listing.names[i] for i in keep], [listing.pairs[i] for i in keep],
                   listing.source, validation)


def read_label_png(path, descriptor):
    """One label PNG (grey or palette indices) -> uint8 [H, W] classes and VOID.

    Raises:
        DataError: a JPEG or other lossy label, an RGB colour-coded label, or a
            value that is neither a class nor void (file, value, pixel count).
    """
    path = pathlib.Path(path)

    def check(image):
        if image.format != "PNG":
            raise DataError(f"{path}: a {image.format} label: labels need a lossless format "
                            "(PNG); JPEG changes class indices at every edge")
        if image.mode in ("RGB", "RGBA", "RGBX", "LA", "PA"):
            raise DataError(f"{path}: an {image.mode} colour-coded label: labels need one class "
                            "index per pixel (grey 'L' or palette 'P' PNG); map colours to "
                            "indices first (docs/DATASETS.md)")
        if image.mode not in _INDEX_MODES:
            raise DataError(f"{path}: label mode {image.mode} is not one index per pixel")
    raw = np.asarray(decode_image(path, check_header=check)).astype(np.int64)
    lut = descriptor.lut()
    mapped = lut[np.clip(raw, 0, datasets.RAW_VALUES - 1)]
    bad = (mapped == datasets.INVALID) | (raw >= datasets.RAW_VALUES) | (raw < 0)
    if bad.any():
        value = int(raw[bad][0])
        count = int(np.count_nonzero(raw == value))
        raise DataError(f"{path}: value {value} ({count} pixels) is neither a class nor void "
                        f"(the {descriptor.name} labels are {descriptor.describe_raw()})")
    return mapped.astype(np.uint8)


def read_pair(descriptor, image_path, label_path):
    """One image and its label map, decoded and checked: (uint8 [H, W, 3], uint8 [H, W])."""
    if descriptor.label_format == "mat":
        return siftflow.read_image(image_path), siftflow.read_label(label_path)
    image = read_rgb(image_path, upright=False)
    label = read_label_png(label_path, descriptor)
    if label.shape != image.shape[:2]:
        raise DataError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                        f"{image_path} is {image.shape[1]}x{image.shape[0]} (width x height)")
    return image, label
