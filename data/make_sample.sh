#!/usr/bin/env bash
# Rebuilds the embedded default data from the real SIFT Flow trainval release:
#   data/siftflow_sample.h5         the first K images of each scene category in trainval.txt
#   data/siftflow_sample_train.txt  its training names   (siftflow.split_train_val, 10% val)
#   data/siftflow_sample_val.txt    its validation names
# Usage (from anywhere): data/make_sample.sh [SIFTFLOW_ROOT]
#   SIFTFLOW_ROOT defaults to $FCN_TF1_SIFTFLOW, else ../shared/siftflow (relative to the repo).
#   PYTHON selects the interpreter that has fcn_tf1 installed (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-${FCN_TF1_SIFTFLOW:-../shared/siftflow}}"
PYTHON="${PYTHON:-python3}"
K=7                        # the largest K whose file stays under the 8 MiB limit
LIMIT_BYTES=$((8 * 1024 * 1024))

"$PYTHON" -m fcn_tf1.cli prepare --data-dir "$ROOT" --split trainval \
    --limit-per-category "$K" --out data/siftflow_sample.h5

"$PYTHON" - "$LIMIT_BYTES" <<'PY'
import os
import sys

from fcn_tf1 import h5data, siftflow

path = "data/siftflow_sample.h5"
size = os.path.getsize(path)
if size > int(sys.argv[1]):
    sys.exit(f"{path}: {size} bytes, over the limit {sys.argv[1]}; lower K")
with h5data.H5Dataset(path) as data:
    train, val = siftflow.split_train_val(data.names, val_fraction=0.1)
    void = data.label_counts().sum() < len(data) * data.image_shape[0] * data.image_shape[1]
for names, out in ((train, "data/siftflow_sample_train.txt"), (val, "data/siftflow_sample_val.txt")):
    with open(out, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in names))
print(f"{path}: {len(train) + len(val)} images ({len(train)} train, {len(val)} val), "
      f"{size / 2**20:.2f} MiB, void pixels present: {void}")
PY
