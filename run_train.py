#!/usr/bin/env python3
"""Front door: `python run_train.py` trains the default model on the embedded data.

Training lands with the training issue; until then this says so instead of
pretending to train.
"""
import sys

if __name__ == "__main__":
    print("run_train.py: training is not implemented yet", file=sys.stderr)
    sys.exit(1)
