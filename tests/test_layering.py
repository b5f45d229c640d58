"""The packages import one way, read from the source (imports inside functions included):

- the core (``vidcls`` except ``vidcls.cli``) imports none of training, export, client, cli;
- training, export and client import no ``vidcls.cli`` (the program ties them together, not they it);
- the python-backend models (``vidcls.triton_models``) and the client import no torch: not in their
  own code (functions included), not through the modules those import when loaded, and not at run
  time: the serving image and ``pip install vidcls[client]`` have none. (A core helper may import
  torch inside a function that only a torch tensor reaches: ``vidcls.sampling`` does.)
- export does not reach into the python-backend models (shared names live in the config, the
  ONNX Runtime helpers in ``vidcls.ort``), and no two modules import each other, however indirectly;
- library code logs or returns: ``print`` only in the program and the commands.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder → import name (pyproject's package-dir).
PACKAGES = {"vidcls": "vidcls", "training": "vidcls.training", "export": "vidcls.export", "client": "vidcls.client"}
TORCH = {"torch", "torchvision"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _nodes(tree: ast.AST, lazy: bool):
    """Every node, or (``lazy=False``) those outside function bodies: what runs when the module loads."""
    for node in ast.iter_child_nodes(tree):
        if not lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        yield node
        yield from _nodes(node, lazy)


def _imports(name: str, lazy: bool = True) -> set[str]:
    """The modules ``name`` imports (``lazy``: inside functions too): ours by full name, others by top name."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in _nodes(ast.parse(path.read_text(), filename=str(path)), lazy):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            out.add(target if target in MODULES else _owner(target))
    out.discard(name)
    return out


def _owner(target: str) -> str:
    """The known module a dotted import name falls in (``vidcls.config.X`` → vidcls.config), else its top name."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return parts[0]


GRAPH = {name: _imports(name) for name in MODULES}
ON_LOAD = {name: _imports(name, lazy=False) for name in MODULES}


def _layer(name: str) -> str:
    for layer in ("vidcls.cli", "vidcls.training", "vidcls.export", "vidcls.client"):
        if name == layer or name.startswith(layer + "."):
            return layer
    return "core"


def _closure(name: str, graph: dict[str, set[str]] = GRAPH) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_the_graph_is_read():
    assert len(MODULES) > 40 and "vidcls.training.import_checkpoint" in MODULES
    assert "vidcls.config" in GRAPH["vidcls.triton_models.base"]
    assert "torch" in GRAPH["vidcls.models.temporal"] and "vidcls.training.extract" in GRAPH["vidcls.training.distributed"]


def test_the_folder_map_is_pyprojects_and_documented():
    """PACKAGES above is what pyproject installs, and docs/development.md says so for each folder."""
    import tomllib

    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert {folder: package for package, folder in dirs.items()} == PACKAGES
    doc = (ROOT / "docs" / "development.md").read_text()
    missing = [f for f, p in PACKAGES.items() if f"| `{f}/` | `{p}`" not in doc]
    assert not missing, f"docs/development.md's folder table lacks {missing}"


def test_core_imports_no_outer_layer():
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() if _layer(m) == "core"
           for d in deps if d in MODULES and _layer(d) != "core"]
    assert not bad, bad


def test_only_the_program_imports_the_cli():
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() if _layer(m) != "vidcls.cli"
           for d in deps if _layer(d) == "vidcls.cli"]
    assert not bad, bad


@pytest.mark.parametrize("package", ["vidcls.triton_models", "vidcls.client"])
def test_torch_free(package):
    members = [m for m in MODULES if m == package or m.startswith(package + ".")]
    assert members
    # Their own code, functions included, and whatever loading each module it imports loads.
    bad = {m: sorted(dep for dep in GRAPH[m] if dep in TORCH or _closure(dep, ON_LOAD) & TORCH)
           for m in members}
    bad = {m: deps for m, deps in bad.items() if deps}
    assert not bad, f"torch reachable from {bad}"
    code = ("import importlib, sys\n"
            f"for name in {members!r}: importlib.import_module(name)\n"
            "sys.exit(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'}) or 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_export_does_not_reach_into_the_python_models():
    bad = [f"{m} imports {d}" for m, deps in GRAPH.items() if _layer(m) == "vidcls.export"
           for d in deps if d.startswith("vidcls.triton_models")]
    assert not bad, bad


def test_no_import_cycles():
    cycles = sorted({" → ".join(sorted(_cycle_members(m))) for m in MODULES if m in _closure(m)})
    assert not cycles, cycles


def _cycle_members(name: str) -> set[str]:
    return {m for m in _closure(name) if name in _closure(m)} | {name}


# Where printing is the job: the program itself, each command's run()/main() (and what they nest),
# and command modules (training/*_command.py). Everything else logs or returns.
def _prints_outside_commands(name: str) -> list[str]:
    path = MODULES[name]
    if _layer(name) == "vidcls.cli" or path.stem.endswith("_command"):
        return []
    found = []

    def walk(node, inside_command: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                walk(child, inside_command or child.name in ("run", "main"))
                continue
            if (not inside_command and isinstance(child, ast.Call) and isinstance(child.func, ast.Name)
                    and child.func.id == "print"):
                found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            walk(child, inside_command)

    walk(ast.parse(path.read_text()), False)
    return found


def test_library_code_logs_instead_of_printing():
    bad = [hit for name in MODULES for hit in _prints_outside_commands(name)]
    assert not bad, bad
