"""Where the project's own files live: the embedded sample and prepared data files."""
import pathlib

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = PROJECT_ROOT / "data" / "siftflow_sample.h5"  # real SIFT Flow images
PREPARED_DIR = PROJECT_ROOT / "data" / "prepared"  # `--data-dir ROOT` prepares its split here
