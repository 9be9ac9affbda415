"""python -m bench [options]: the same as ``fcn-tf1 bench [options]``, from the repository root."""
import sys

from . import main

sys.exit(main())
