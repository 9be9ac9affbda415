"""How the benchmark starts its child processes: ``python -m bench.<module>``, wherever it runs.

    module_command(name, *args) -> argv    a module of this package as a child's main
    child_env(**overrides) -> environ      os.environ with the repository root importable

The children (one worker per framework, the architecture check, the memory
probes) must import this package whether the parent runs as ``python -m bench``
from the repository root or is loaded by ``fcn-tf1 bench`` from elsewhere, so
their PYTHONPATH starts with the directory that holds it.
"""
import os
import pathlib
import sys

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def module_command(name, *args):
    """argv running ``<this package>.<name>`` as the main module of a new interpreter."""
    return [sys.executable, "-m", f"{__package__}.{name}", *map(str, args)]


def child_env(**overrides):
    """The environment for a child: os.environ, ``overrides``, PYTHONPATH led by the repo root."""
    env = dict(os.environ, **overrides)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env
