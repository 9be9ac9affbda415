"""The code's shape: small modules, and no module reaching into another's private names.

A private name (leading underscore) may change with its module; a caller in
another module would then break or, worse, keep working on a stale copy.
"""
import ast
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("fcn_tf1", "bench", "tests/support")
                 for p in (REPO_ROOT / folder).rglob("*.py"))
MAX_LINES = 400


def _module_name(path):
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def private_uses(path):
    """``(line, text)`` of every use of another module's private name in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules = set()  # local names bound to project modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                node.module.split(".")[0] in ("fcn_tf1", "bench", "tests"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append((node.lineno, f"from . import {alias.name}"))
                modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return found


@pytest.mark.parametrize("path", SOURCES, ids=_module_name)
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO_ROOT)}: {lines} lines"


@pytest.mark.parametrize("path", SOURCES + sorted((REPO_ROOT / "tests").glob("test_*.py")),
                         ids=_module_name)
def test_no_module_uses_another_modules_private_names(path):
    assert private_uses(path) == []


def test_the_private_name_check_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from fcn_tf1 import layers\nfrom fcn_tf1.siftflow import _reason\n"
                      "layers._hidden(1)\nlayers.public(2)\n")
    assert private_uses(sample) == [(2, "from fcn_tf1.siftflow import _reason"),
                                    (3, "layers._hidden")]
