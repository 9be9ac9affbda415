#!/usr/bin/env python3
"""Front door: ``python run_train.py`` trains the default model on the embedded data.

The same command as ``fcn-tf1 train``; ``python run_train.py --help`` lists
every option. With no options it trains the default compact FCN-8s on the
real SIFT Flow sample in data/ for a few minutes, evaluates on the sample's
validation images, prints the metrics table and writes prediction PNGs.
"""
import sys

from fcn_tf1.cli import main_train

if __name__ == "__main__":
    sys.exit(main_train(sys.argv[1:]))
