"""Every ``from vidcls... import name`` in the repository resolves: library code, the CLI, tests,
benchmarks and imports inside function bodies (which a plain import of the module never runs, so
a name that moved breaks only the path that reaches it — a benchmark crashed at start that way).

Each statement is checked by importing its module and looking the name up (an attribute, or a
submodule of that name). Our modules import optional packages (TensorRT, ...) inside functions,
so every one of them imports on a machine without a GPU.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("vidcls", "training", "export", "client", "benchmarks", "tests")


def _statements():
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                        and (node.module == "vidcls" or node.module.startswith("vidcls.")):
                    yield f"{path.relative_to(ROOT)}:{node.lineno}", node.module, [a.name for a in node.names]
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("vidcls."):
                            yield f"{path.relative_to(ROOT)}:{node.lineno}", alias.name, []


STATEMENTS = list(_statements())


def _missing(module: str, names: list[str]) -> list[str]:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == "vidcls" or exc.name.startswith("vidcls.")):
            return [f"module {module} ({exc.name} not found)"]
        raise  # a third-party package: every module of ours must import on the test machine
    out = []
    for name in names:
        if name == "*" or hasattr(mod, name):
            continue
        try:
            importlib.import_module(f"{module}.{name}")
        except ModuleNotFoundError:
            out.append(f"{module}.{name}")
    return out


def test_statements_were_found():
    # The walk must see imports inside function bodies and in benchmarks, or the test guards nothing.
    where = {s[0].split("/")[0] for s in STATEMENTS}
    assert {"vidcls", "benchmarks", "tests", "client", "export", "training"} <= where
    assert len(STATEMENTS) > 200


def test_every_vidcls_import_resolves():
    broken = []
    for where, module, names in STATEMENTS:
        broken += [f"{where}: {m}" for m in _missing(module, names)]
    assert not broken, "imports that do not resolve:\n" + "\n".join(broken)
