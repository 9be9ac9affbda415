"""``fcn-tf1 prepare``: a dataset's files -> one HDF5 file (fcn_tf1.prepare_data)."""
import argparse
import pathlib

from fcn_tf1 import datasets
from fcn_tf1.errors import ConfigError


def add_parser(subparsers):
    p = subparsers.add_parser(
        "prepare", help="convert a segmentation dataset into one HDF5 file",
        description="Read a dataset's images and label maps and write one HDF5 file: images "
                    "uint8 [N,H,W,3] at their own sizes, labels uint8 [N,H,W] (classes 0..C-1, "
                    "void 255), names, and the dataset descriptor (class names, colours, void). "
                    "Layouts: SIFT Flow as released, CamVid in SegNet's layout, Pascal VOC "
                    "(detected from --data-dir), or your own folders (--images + --labels, or "
                    "--pairs) with --classes or --descriptor. Written atomically. "
                    "See docs/DATASETS.md.")
    where = p.add_argument_group("where the data is (one of)")
    where.add_argument("--data-dir", type=pathlib.Path, default=None,
                       help="a dataset root: SIFT Flow (Images/, SemanticLabels/), SegNet's "
                            "CamVid (train.txt, trainannot/), VOC (JPEGImages/, "
                            "SegmentationClass/)")
    where.add_argument("--images", type=pathlib.Path, default=None,
                       help="your own folder of images (.jpg/.jpeg/.png); with --labels")
    where.add_argument("--labels", type=pathlib.Path, default=None,
                       help="its label PNGs, one per image with the same name (NAME.png), one "
                            "class index per pixel (grey or palette PNG)")
    where.add_argument("--pairs", type=pathlib.Path, default=None,
                       help="a list file of '<image> <label>' lines, paths relative to it")
    what = p.add_argument_group("what the labels mean (default: the layout's built-in dataset)")
    what.add_argument("--dataset", default=None, choices=sorted(datasets.BUILT_IN),
                      help="a built-in descriptor: siftflow (33 classes, .mat, 0 = void), "
                           "camvid (11 classes, 11 = void), voc (21 classes, 255 = void)")
    what.add_argument("--descriptor", type=pathlib.Path, default=None,
                      help="a dataset descriptor JSON file: classes, void, colours, remapping")
    what.add_argument("--classes", default=None,
                      help="class names 'a,b,c' (label value i = class i) or a file of names")
    what.add_argument("--void", default=None,
                      help="with --classes: the raw label value(s) meaning void, e.g. 255 or 0,255")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--split", default=None,
                       help="with --data-dir: the split (SIFT Flow: ROOT/SPLIT.txt, default "
                            "trainval; SegNet/VOC: train, val or train+val (default), both lists "
                            "in one file, val marked as the validation images)")
    group.add_argument("--names-file", type=pathlib.Path, default=None,
                       help="a file of image names, one per line, instead of --split")
    p.add_argument("--out", required=True, type=pathlib.Path, help="output HDF5 file")
    p.add_argument("--limit-per-category", type=int, default=None,
                   help="keep only the first K names of each category (the name's prefix before "
                        "'_'; to build small samples)")
    p.add_argument("--processes", type=int, default=None,
                   help="decoding processes on this machine (default: number of cores)")
    p.add_argument("--workers", type=int, dest="processes", default=None,
                   help=argparse.SUPPRESS)  # its earlier name: not a cluster's workers
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out file (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args):
    from fcn_tf1 import layouts, prepare_data
    own = args.images is not None or args.labels is not None or args.pairs is not None
    if own == (args.data_dir is not None):
        raise ConfigError("give --data-dir ROOT, or your own --images DIR --labels DIR, or "
                          "--pairs FILE")
    descriptor = layouts.descriptor_for(None if own else args.data_dir, args.dataset,
                                        args.descriptor, args.classes, args.void)
    summary = prepare_data.prepare(
        args.data_dir, args.out, split=args.split, names_file=args.names_file,
        limit_per_category=args.limit_per_category, workers=args.processes,
        progress=not args.quiet, overwrite=args.overwrite, descriptor=descriptor,
        pairs_file=args.pairs, images=args.images, labels=args.labels)
    sizes = summary["sizes"]
    size_words = (f"{sizes[0][1]}x{sizes[0][0]}" if len(sizes) == 1
                  else f"{len(sizes)} sizes up to {max(w for _, w in sizes)}x"
                       f"{max(h for h, _ in sizes)}")
    validation = (f" ({summary['num_validation']} marked validation)"
                  if summary["num_validation"] else "")
    print(f"wrote {summary['path']}: {summary['dataset']}, {summary['num_images']} images of "
          f"{summary['source_split']}{validation}, {size_words}, "
          f"{summary['file_bytes'] / 2**20:.1f} MiB, {100 * summary['void_fraction']:.1f}% void "
          f"pixels, {summary['seconds']:.1f} s ({summary['num_images'] / summary['seconds']:.0f} "
          "img/s)")
    return 0
