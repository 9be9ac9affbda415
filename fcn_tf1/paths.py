"""Where the project's own files live: the embedded sample and prepared data files.

- The embedded sample (56 real SIFT Flow images): inside the installed package
  (``fcn_tf1/data/siftflow_sample.h5``, shipped as package data by setup.py)
  or, in a repository checkout and an editable install, ``data/`` beside the
  package.
- Prepared data (``--data-dir ROOT`` turns a released layout into one HDF5
  file once): the cache directory ``$FCN_TF1_CACHE``, else
  ``$XDG_CACHE_HOME/fcn_tf1``, else ``~/.cache/fcn_tf1``; never inside the
  installed package. The file name is keyed by the source folder and split,
  so two datasets never share a prepared file.
"""
import hashlib
import os
import pathlib

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
SAMPLE_NAME = "siftflow_sample.h5"


def _default_data():
    packaged = PACKAGE_DIR / "data" / SAMPLE_NAME  # a wheel or a plain `pip install .`
    checkout = PACKAGE_DIR.parent / "data" / SAMPLE_NAME  # a repository checkout
    return packaged if packaged.is_file() else checkout


DEFAULT_DATA = _default_data()


def cache_dir(environ=None):
    """The folder prepared data files go to (see the module docstring); not created here."""
    environ = os.environ if environ is None else environ
    if environ.get("FCN_TF1_CACHE"):
        return pathlib.Path(environ["FCN_TF1_CACHE"]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "fcn_tf1"


def prepared_file(data_dir, split, environ=None, dataset="siftflow"):
    """The prepared HDF5 file of ``split`` of the dataset folder ``data_dir``.

    Keyed by the folder's resolved path: ``DATASET_SPLIT_<12 hex digits>.h5``.
    """
    source = str(pathlib.Path(data_dir).expanduser().resolve())
    key = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    return cache_dir(environ) / f"{dataset}_{split}_{key}.h5"
