"""The house rules of the package, checked on its source: imports flow downward only, no import
cycles, no import inside a function to dodge one, no module over 800 lines, a working public API."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import sleepfm

PACKAGE = Path(sleepfm.__file__).parent

# Lowest first. A module may import modules of its own layer or of a lower one. `eval` computes
# from arrays and sits below the models, whose heads score themselves with its metrics.
LAYERS: list[tuple[str, ...]] = [
    ("sleepfm._version", "sleepfm.exceptions"),
    ("sleepfm.utils", "sleepfm.registry"),
    ("sleepfm.vocab", "sleepfm.channels", "sleepfm.settings", "sleepfm.config"),
    ("sleepfm.io", "sleepfm.splits", "sleepfm.checkpoint"),
    ("sleepfm.preprocess", "sleepfm.spectral", "sleepfm.synthetic", "sleepfm.synthetic_cohort",
     "sleepfm.yasa_baseline"),
    ("sleepfm.eval", "sleepfm.synthetic_sites"),
    ("sleepfm.data", "sleepfm.lead_data", "sleepfm.lead_epochs", "sleepfm.windows"),
    ("sleepfm.models", "sleepfm.ssl"),
    ("sleepfm.artifacts", "sleepfm.train", "sleepfm.rundir"),
    ("sleepfm.stages",),
    ("sleepfm",),  # the public API (the package's __init__)
    ("sleepfm.cli",),
]
# Third-party packages heavy enough to be imported only where they are used.
LAZY_ALLOWED = {"matplotlib", "mne", "torch", "safetensors", "yasa", "distributed", "lightgbm"}
MAX_LINES, LONG_ALLOWED = 800, {"sleepfm.synthetic"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if module == name or module.startswith(name + "."):
                if best is None or len(name) > best[1]:
                    best = (i, len(name))
    assert best is not None, f"{module} is in no layer of LAYERS; add it"
    return best[0]


def _resolve(module: str, node: ast.ImportFrom) -> str:
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    if node.level:
        base = base[:len(base) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))
    return node.module


def _imports(module: str):
    """``(target, lazy, line)`` for every import of ``module``; targets are modules of sleepfm
    where they resolve to one, else the top-level third-party package."""
    tree = ast.parse(MODULES[module].read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inside = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target
                     for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "sleepfm":
                name = name.split(".")[0]
            yield name, id(node) in inside, node.lineno


def _graph() -> dict[str, set[str]]:
    graph = {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    # The public API loads its names lazily from a table: those are its edges.
    graph["sleepfm"] |= set(sleepfm._API.values())
    return graph


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_imports_flow_downward():
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, targets in _graph().items() for t in targets if _layer(t) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph, state, cycles = _graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_no_imports_inside_functions_but_heavy_optional_ones():
    found = [f"{MODULES[m].relative_to(PACKAGE.parent)}:{line} imports {t}"
             for m in MODULES for t, lazy, line in _imports(m)
             if lazy and (t.startswith("sleepfm") or t not in LAZY_ALLOWED)]
    assert not found, "\n".join(found)


def test_modules_stay_small():
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES and m not in LONG_ALLOWED}
    assert not long, f"split these modules by job: {long}"


@pytest.mark.parametrize("name", sorted(sleepfm._API))
def test_public_api_resolves_and_is_documented(name):
    value = getattr(sleepfm, name)
    assert value is getattr(importlib.import_module(sleepfm._API[name]), name)
    if callable(value) and not isinstance(value, type(sleepfm)):
        assert (value.__doc__ or "").strip(), f"sleepfm.{name} has no docstring"


def test_public_api_stage_functions_have_numpydoc():
    for name in ("read_edf", "preprocess_directory", "pretrain", "embed", "finetune", "evaluate",
                 "predict", "create_encoder", "load_encoder"):
        doc = getattr(sleepfm, name).__doc__
        for section in ("Parameters", "Returns", "Raises"):
            assert f"{section}\n    ---" in doc, f"sleepfm.{name} lacks a {section} section"
    assert "RunDir" in sleepfm.__all__ and hasattr(sleepfm.RunDir, "store")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        sleepfm.nothing  # noqa: B018
