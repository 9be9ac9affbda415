"""Garbage in: the readers fed random and mutated bytes must answer with our one-line error.

    python -m tests.support.fuzz --seconds 60 [--seed 0] [--out DIR] [--json FILE]

Readers (each gets an equal share of ``--seconds``):

    jpeg     siftflow.read_image: mutated SIFT Flow JPEGs (baseline, progressive), PNGs
    mat      siftflow.read_label: mutated MATLAB files (v5 plain and compressed, v4)
    hdf5     h5data.H5Dataset: open, read items, label_counts
    batches  batches.iterate_batches and batches.BatchStream over the same mutated files
    rgb      predict.read_rgb, what `fcn-tf1 predict` decodes (imports TensorFlow)
    png      layouts.read_label_png: mutated grey and palette label PNGs

HDF5 cases whose edits touch a global heap collection of the seed file (where
variable-length strings live: ``names``, ``class_names``) are *skipped*, and
counted as such: libhdf5 1.14 (h5py 3.14) loops forever reading a vlen string
whose heap object size is corrupt (bench/README.md), a hang no reader can
catch. Skipping them by position, not by time, keeps the rest of the hdf5
budget the same on a slow machine and a fast one.

A case is *accepted* (a valid array comes back) or *rejected* with a DataError
``<path>: <reason>`` on one line. Anything else is a finding: another exception,
a message on several lines or not naming the file, or a case slower than
``--slow`` seconds; its input is kept in ``OUT/findings``. A case running for
over ``--hang`` seconds ends the process with status 3. A crash or a hang
takes the process down, so run this as a child with a time limit (faults.py
does): ``OUT/readers/current`` or ``OUT/prepare/current`` then names the case that was
running (the mutated file is left in place).

Also here, for tests/test_fuzz.py and faults.py: ``fuzz_prepare`` (one
mutated file in a small released-layout root: the output is complete or absent),
``fuzz_config`` (config.json contents) and ``fuzz_output_names`` (predict's
output names). The inputs (mutation, valid seed files) are in fuzz_inputs.py.
"""
import argparse
import contextlib
import importlib
import io
import json
import math
import os
import pathlib
import random
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

from fcn_tf1 import batches, datasets, h5data, layouts, siftflow
from fcn_tf1.errors import ConfigError, DataError

from .fuzz_inputs import make_root, mutate, seed_inputs


# --- what each reader must return ------------------------------------------------------

def _read_image(path):
    image = siftflow.read_image(path)
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8, image.shape


def _read_label(path):
    label = siftflow.read_label(path)
    assert label.shape == (256, 256) and label.dtype == np.uint8
    assert ((label <= 32) | (label == 255)).all()


def _read_hdf5(path):
    with h5data.H5Dataset(path) as data:
        n = len(data)
        for i in sorted({0, 1, n - 1} & set(range(n))):  # a few: a mutated N may be huge
            image, label = data.image(i), data.label(i)
            assert image.dtype == np.uint8 and image.shape == data.size(i) + (3,)
            assert label.shape == data.size(i)
        if n <= 8:
            data.label_counts()


LABEL_PNG = datasets.Descriptor(name="fuzz", class_names=siftflow.CLASS_NAMES, void_values=(255,))


def _read_label_png(path):
    label = layouts.read_label_png(path, LABEL_PNG)
    assert label.ndim == 2 and label.dtype == np.uint8
    assert ((label <= 32) | (label == 255)).all()


def _read_batches(path):
    for k, (images, labels, names) in enumerate(batches.iterate_batches(path, batch_size=2)):
        assert images.shape[:3] == labels.shape and len(names) == len(images)
        if k == 1:
            break
    with batches.BatchStream(path, None, 2, crop_size=8, prefetch=1) as stream:
        for _ in range(2):
            images, labels = next(stream)
            assert images.shape == (2, 8, 8, 3) and labels.shape == (2, 8, 8)


def _read_rgb(path):
    from fcn_tf1 import predict
    image = predict.read_rgb(path)
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


READERS = {"jpeg": ("jpeg", _read_image), "mat": ("mat", _read_label),
           "hdf5": ("hdf5", _read_hdf5), "batches": ("hdf5", _read_batches),
           "rgb": ("jpeg", _read_rgb), "png": ("png", _read_label_png)}


def run_case(read, path):
    """'accepted', 'rejected', or a finding (a str saying what went wrong)."""
    try:
        read(path)
        return "accepted"
    except DataError as err:
        message = str(err)
        if "\n" in message or not message.startswith(f"{path}: "):
            return f"DataError not one line naming the file: {message[:300]!r}"
        return "rejected"
    except Exception as err:  # noqa: BLE001 - the finding itself
        return f"{type(err).__name__}: {str(err)[:300]}"


def _watchdog(started, out_dir, hang):
    """Ends the process (status 3) when one case runs longer than ``hang`` seconds: C code
    that loops forever cannot be interrupted, so the hang is reported from outside it."""
    def watch():
        while True:
            time.sleep(0.5)
            if started[0] is not None and time.monotonic() - started[0] > hang:
                case = (out_dir / "current").read_text().strip()
                print(f"hang: {case} still running after {hang:.0f} s", file=sys.stderr,
                      flush=True)
                os._exit(3)
    threading.Thread(target=watch, name="fuzz-watchdog", daemon=True).start()


def heap_ranges(data):
    """[start, end) of every global heap collection ("GCOL", its size 8 bytes later) in an
    HDF5 file's bytes (8-byte lengths and offsets, as h5py writes them)."""
    ranges, at = [], data.find(b"GCOL")
    while at != -1:
        size = int.from_bytes(data[at + 8:at + 16], "little")
        if 16 <= size <= len(data) - at:
            ranges.append((at, at + size))
        at = data.find(b"GCOL", at + 4)
    return ranges


def touches(valid, mutated, ranges):
    """Whether ``mutated`` differs from ``valid`` inside one of ``ranges``: compared from the
    start up to the first difference and, for the rest, aligned from the end (an insert or
    a cut shifts what follows it)."""
    first = next((i for i, (a, b) in enumerate(zip(valid, mutated)) if a != b),
                 min(len(valid), len(mutated)))
    if len(valid) == len(mutated):
        return any(start <= i < end for i in range(first, len(valid))
                   if valid[i] != mutated[i] for start, end in ranges)
    same_tail = next((k for k in range(min(len(valid), len(mutated)) - first)
                      if valid[-1 - k] != mutated[-1 - k]), min(len(valid), len(mutated)) - first)
    last = max(first, len(valid) - 1 - same_tail)  # the changed span, in the seed's bytes
    return any(first < end and last >= start for start, end in ranges)


def fuzz_readers(seconds, out_dir, seed=0, readers=tuple(READERS), slow=5.0, hang=60.0,
                 min_cases=0):
    """Runs every reader in ``readers`` for ``seconds / len(readers)``, and for at least
    ``min_cases`` cases each (so a slow host still runs that many); returns counts.

    A case still running after ``hang`` seconds ends the process with status 3.
    """
    out_dir = pathlib.Path(out_dir)
    started = [None]
    _watchdog(started, out_dir, hang)
    (out_dir / "findings").mkdir(parents=True, exist_ok=True)
    seeds = seed_inputs(out_dir)
    if "rgb" in readers:
        importlib.import_module("fcn_tf1.predict")  # imports TensorFlow: not on the clock
    report = {}
    for n, name in enumerate(readers):
        kind, read = READERS[name]
        rng = random.Random(f"{seed}-{name}")
        counts = {"cases": 0, "accepted": 0, "rejected": 0, "findings": [], "max_seconds": 0.0,
                  "skipped": 0}
        deadline = time.monotonic() + seconds / len(readers)
        while time.monotonic() < deadline or counts["cases"] < min_cases:
            suffix, valid = rng.choice(seeds[kind])
            mutated = mutate(valid, rng)
            if kind == "hdf5" and touches(valid, mutated, heap_ranges(valid)):
                counts["skipped"] += 1  # the known libhdf5 hang: see the module docstring
                continue
            case = out_dir / f"case{n}{suffix}"
            case.write_bytes(mutated)
            (out_dir / "current").write_text(f"{name} {case}\n")
            start = time.perf_counter()
            started[0] = time.monotonic()
            outcome = run_case(read, case)
            started[0] = None
            elapsed = time.perf_counter() - start
            counts["cases"] += 1
            counts["max_seconds"] = max(counts["max_seconds"], elapsed)
            if outcome in ("accepted", "rejected") and elapsed > slow:
                outcome = f"slow: {elapsed:.1f} s"
            if outcome in ("accepted", "rejected"):
                counts[outcome] += 1
            else:
                kept = out_dir / "findings" / f"{name}-{counts['cases']}{suffix}"
                shutil.copyfile(case, kept)
                counts["findings"].append(f"{kept.name}: {outcome}")
        report[name] = counts
    return report


# --- prepare: the output is complete or absent -------------------------------------------

def _prepare_outcome(status, err, out, bad_file):
    leftover = sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []
    if status == 0:
        try:
            _read_hdf5(out)
        except Exception as error:  # noqa: BLE001 - a "successful" prepare wrote a bad file
            return f"status 0 but the output does not read back: {error}"
        return "accepted" if leftover == [out.name] else f"status 0, extra files {leftover}"
    lines = err.strip().splitlines()
    if status != 2 or len(lines) != 1 or not lines[0].startswith(f"fcn-tf1: error: {bad_file}: "):
        return f"status {status}, stderr {err.strip()[-400:]!r}"
    if leftover:
        return f"rejected but left {leftover} behind"
    return "rejected"


def fuzz_prepare(workdir, trials, seed=0):
    """Mutates one file of a small root per trial and runs `fcn-tf1 prepare` in-process."""
    from fcn_tf1 import cli
    rng = random.Random(f"{seed}-prepare")
    root, names = make_root(workdir)
    files = [f(root, n) for n in names for f in (siftflow.image_path, siftflow.label_path)]
    counts = {"cases": 0, "accepted": 0, "rejected": 0, "findings": []}
    for trial in range(trials):
        victim = rng.choice(files)
        original = victim.read_bytes()
        victim.write_bytes(mutate(original, rng))
        (pathlib.Path(workdir) / "current").write_text(f"prepare {victim}\n")
        out = pathlib.Path(workdir) / f"out{trial}" / "data.h5"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = cli.main(["prepare", "--data-dir", str(root), "--out", str(out), "--quiet",
                               "--processes", "2" if trial % 8 == 7 else "1"])
        outcome = _prepare_outcome(status, err.getvalue(), out, victim)
        counts["cases"] += 1
        if outcome in ("accepted", "rejected"):
            counts[outcome] += 1
        else:
            counts["findings"].append(f"{victim.name}: {outcome}")
        victim.write_bytes(original)
        shutil.rmtree(out.parent, ignore_errors=True)
    return counts


# --- config.json -------------------------------------------------------------------------

ODD_VALUES = (None, True, False, 0, -1, 1, 7, 2**31, 2**63, 10**400, 0.5, -0.0, 1e308, math.nan,
              math.inf, -math.inf, "", "fcn8s", "x" * 500, [], [1, 2], [math.nan, 1.0], {},
              {"a": 1}, [0.75, 1.25], [10**400, 1], "../etc/passwd")
ODD_TEXTS = ("", "null", "[]", '"config"', "[" * 50000, '{"width": ' + "9" * 5000 + "}",
             "\ufeff{}", "{\"width\": 4,}", "\x00" * 10)


def _check_loaded(config):
    """What a config that loads must satisfy: finite numbers, integers a graph accepts."""
    for name, value in config.to_dict().items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, float) and not math.isfinite(v):
                return f"{name}={value!r} loaded: not finite"
            if isinstance(v, int) and not isinstance(v, bool) and not -2**31 < v < 2**31:
                return f"{name}={value!r} loaded: integer out of range"
    return "accepted"


def fuzz_config(workdir, cases, seed=0):
    """config.json with odd values, odd keys and mutated text; loads validly or says why."""
    from fcn_tf1 import config as config_lib
    rng = random.Random(f"{seed}-config")
    valid = config_lib.RunConfig().to_dict()
    valid_text = json.dumps(valid)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / config_lib.CONFIG_NAME
    counts = {"cases": 0, "accepted": 0, "rejected": 0, "findings": []}
    for case in range(cases):
        kind = case % 4
        if kind == 3:
            text = (rng.choice(ODD_TEXTS) if rng.random() < 0.2
                    else mutate(valid_text.encode(), rng).decode("utf-8", "replace"))
        else:
            values = dict(valid)
            for _ in range(rng.choice((1, 1, 2, 4))):
                key = rng.choice(sorted(valid))
                if kind == 0:
                    values[key] = rng.choice(ODD_VALUES)
                elif kind == 1:
                    values.pop(key, None)
                else:
                    values[rng.choice((key + "_", key.upper(), "", "__class__"))] = 1
            text = json.dumps(values)
        path.write_text(text, encoding="utf-8")
        try:
            outcome = _check_loaded(config_lib.load(workdir))
        except ConfigError as err:
            message = str(err)
            outcome = "rejected" if "\n" not in message and message.startswith(f"{path}: ") \
                else f"ConfigError not one line naming the file: {message[:200]!r}"
        except Exception as err:  # noqa: BLE001 - the finding itself
            outcome = f"{type(err).__name__}: {str(err)[:200]} for {text[:80]!r}"
        counts["cases"] += 1
        if outcome in ("accepted", "rejected"):
            counts[outcome] += 1
        else:
            counts["findings"].append(outcome)
    return counts


# --- predict output names ------------------------------------------------------------------

NAME_PARTS = ("a", "x", "_color", "_2", ".", "..", "/", "\\", " ", "\n", "\x00", "é", "图",
              ".png", ".jpg", "X", "image", "-" * 120, "~", "$HOME", "%s")


def fuzz_output_names(cases, seed=0, out_dir="out"):
    """predict.output_stems on random paths: inside OUT, valid names, no two outputs alike."""
    from fcn_tf1 import predict
    rng = random.Random(f"{seed}-names")
    out_dir = pathlib.Path(out_dir).resolve()
    counts = {"cases": 0, "accepted": 0, "rejected": 0, "findings": []}
    for _ in range(cases):
        inputs = ["".join(rng.choice(NAME_PARTS) for _ in range(rng.randrange(1, 8)))
                  + rng.choice((".jpg", ".png", ".JPG", "")) for _ in range(rng.randrange(1, 7))]
        problem = None
        try:
            stems = predict.output_stems(inputs)
        except Exception as err:  # noqa: BLE001 - the finding itself
            stems, problem = [], f"{type(err).__name__}: {err}"
        outputs = [name for s in stems for name in (f"{s}.png", f"{s}_color.png")]
        for stem, name in ((s, n) for s in stems for n in (f"{s}.png", f"{s}_color.png")):
            if ("/" in stem or "\x00" in stem or stem.startswith(".") or not stem
                    or len(name.encode("utf-8")) > 255
                    or (out_dir / name).resolve().parent != out_dir):
                problem = f"unsafe output name {name!r}"
        if len({o.casefold() for o in outputs}) != len(outputs):
            problem = problem or f"two inputs write the same file: {outputs}"
        counts["cases"] += 1
        if problem:
            counts["findings"].append(f"{inputs!r}: {problem}")
        else:
            counts["accepted"] += 1
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time for the readers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-cases", type=int, default=0,
                        help="run each reader for at least this many cases, however long")
    parser.add_argument("--hang", type=float, default=60.0,
                        help="a case running longer is a hang: exit status 3")
    parser.add_argument("--readers", default=",".join(READERS),
                        help="comma-separated subset of " + ", ".join(READERS))
    parser.add_argument("--prepare-trials", type=int, default=100)
    parser.add_argument("--config-cases", type=int, default=4000)
    parser.add_argument("--name-cases", type=int, default=20000)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="where cases and findings go (default: a temporary directory)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the report")
    args = parser.parse_args(argv)
    out = args.out or pathlib.Path(tempfile.mkdtemp(prefix="fcn-fuzz-"))
    readers = [name for name in args.readers.split(",") if name]
    report = fuzz_readers(args.seconds, out / "readers", args.seed, readers,
                          hang=args.hang, min_cases=args.min_cases) if readers else {}
    if args.prepare_trials:
        report["prepare"] = fuzz_prepare(out / "prepare", args.prepare_trials, args.seed)
    if args.config_cases:
        report["config"] = fuzz_config(out / "config", args.config_cases, args.seed)
    if args.name_cases:  # imports fcn_tf1.predict, hence TensorFlow
        report["names"] = fuzz_output_names(args.name_cases, args.seed)
    for name, counts in report.items():
        print(f"{name:8s} {counts['cases']:6d} cases  {counts['accepted']:6d} accepted  "
              f"{counts['rejected']:6d} rejected  {len(counts['findings'])} findings")
        for finding in counts["findings"][:10]:
            print(f"    {finding}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if any(c["findings"] for c in report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
