"""fcn_tf1: per-pixel FCN scene labeling on SIFT Flow in TF1-style graph code."""
import pathlib
import re

from setuptools import find_packages, setup

# the version is stated once, in the package
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (pathlib.Path(__file__).parent / "fcn_tf1" / "__init__.py").read_text(),
                    re.M).group(1)

setup(
    name="fcn_tf1",
    version=VERSION,
    description=(
        "Fully convolutional scene labeling (SIFT Flow, 33 classes) written as "
        "TF1-style graph code through tf.compat.v1, running on TensorFlow 2.x"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fcn_tf1", "fcn_tf1.*"]) + ["fcn_tf1.data"],
    # the embedded sample ships inside the package: the default job works from any folder
    package_dir={"fcn_tf1.data": "data"},
    package_data={"fcn_tf1.data": ["siftflow_sample.h5", "siftflow_sample_*.txt", "README.md"]},
    install_requires=[
        # 2.12 is the oldest release kept working (last Keras 2 era), 2.21 the newest tested.
        "tensorflow>=2.12,<2.22",
        "numpy",
        "h5py",
        "scipy",  # reads SIFT Flow's MATLAB .mat label maps
        "pillow",  # JPEG/PNG decoding and the prediction PNGs
        "tqdm",  # progress bars on long work
        "matplotlib",  # the learning-curve PNG of a run
        "tensorboard",  # `tensorboard --logdir runs` (TensorFlow no longer installs it)
    ],
    extras_require={
        "test": ["pytest"],
        # only for `fcn-tf1 bench` (the PyTorch peer); the CPU build is what it measures
        "bench": ["torch==2.13.0"],
    },
    entry_points={"console_scripts": ["fcn-tf1=fcn_tf1.cli:main"]},
)
