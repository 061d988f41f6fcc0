"""The architecture rules: imports only go down the layers, ``import saescope`` stays light,
no module over ~300 lines, and every config field has a docstring."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "saescope"

# Lower numbers are lower layers. Top-level helper modules and ``reports`` (HTML and figures, no
# saescope imports) are layer 0 and may import each other.
# docs/architecture.md lists the same packages (test_architecture_doc_matches_the_layers).
LAYERS = {"reports": 0, "model": 1, "parallel": 1, "activations": 2, "sae": 3, "features": 4, "steering": 4, "circuits": 5,
          "editing": 5, "autointerp": 5, "bias": 6, "app": 7, "cli": 8}
SIDEWAYS_OK: set[tuple[str, str]] = set()


def _unit(module: str) -> str:
    """``saescope.steering.contrast.fit`` -> ``steering``; ``saescope.storage`` -> ``storage``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _modules(root: Path = PACKAGE) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        out.append((".".join(parts), path))
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (annotations only: not imported at run time)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def _imports(path: Path, package: str = "saescope") -> list[tuple[int, str]]:
    """Every run-time import of ``package`` in the file, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    skip, found = _type_checking_lines(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found
            if line not in skip and (name == package or name.startswith(package + "."))]


def _rank(unit: str, layers: dict[str, int], packages: set[str]) -> int | None:
    """A package's layer; ``None`` for a package the table does not list; 0 for a top-level module."""
    if unit in layers:
        return layers[unit]
    return None if unit in packages else 0


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (Tarjan's strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_violations(root: Path = PACKAGE, layers: dict[str, int] = LAYERS) -> list[str]:
    """Everything wrong with the house under ``root``: unlisted packages, imports that go up or
    sideways between packages, the top-level package imported from inside, and import circles."""
    name = root.name
    modules = _modules(root)
    packages = {p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    bad = [f"package {p!r} is not in the layer table" for p in sorted(packages - set(layers))]
    graph: dict[str, set[str]] = {module: set() for module, _ in modules}
    for module, path in modules:
        here = _unit(module)
        for line, target in _imports(path, name):
            if target in graph and target != module:
                graph[module].add(target)
            there = _unit(target)
            if there == here or module == name:
                continue
            if target == name:
                bad.append(f"{path.name}:{line} imports the top-level package")
                continue
            low, high = _rank(there, layers, packages), _rank(here, layers, packages)
            if low is None or high is None:
                continue  # reported above
            if low > high or (low == high > 0 and (here, there) not in SIDEWAYS_OK):
                bad.append(f"{module}:{line} imports {target} (layer {low} from layer {high})")
    bad += [f"import circle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return bad


def test_imports_only_go_down_the_layers_and_never_in_circles():
    bad = layer_violations()
    assert not bad, "\n".join(bad)


def test_the_checker_catches_a_bad_house(tmp_path):
    """A small package with one of each mistake: the checker must name all four."""
    root = tmp_path / "house"
    for package, source in {"low": "from house.high.top import x\n", "high": "", "loose": ""}.items():
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / "mod.py").write_text(source)
    (root / "__init__.py").write_text("")
    (root / "high" / "top.py").write_text("x = 1\n")
    (root / "high" / "a.py").write_text("def f():\n    from house.high.b import g\n")  # circle, inside a function
    (root / "high" / "b.py").write_text("from house.high.a import f\n")
    (root / "low" / "ok.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from house.high.a import f\n")
    (root / "low" / "up.py").write_text("import house\n")
    bad = layer_violations(root, {"low": 1, "high": 2})
    assert any("'loose' is not in the layer table" in b for b in bad)
    assert any("house.low.mod:1 imports house.high.top (layer 2 from layer 1)" in b for b in bad)
    assert any("import circle: house.high.a -> house.high.b" in b for b in bad)
    assert any("up.py:1 imports the top-level package" in b for b in bad)
    assert not any("house.low.ok" in b for b in bad)  # annotations only
    assert layer_violations(root, {"low": 1, "high": 2, "loose": 3}) != []


def test_architecture_doc_matches_the_layers():
    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text()
    listed = re.findall(r"^\| (\d+) \| `(\w+)/` \|", doc, flags=re.M)
    assert {package: int(layer) for layer, package in listed} == LAYERS


def test_import_saescope_is_light():
    code = ("import sys, saescope; heavy = [m for m in ('torch', 'numba', 'pandas', 'scipy', 'transformers') "
            "if m in sys.modules]; print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_public_names_resolve():
    import saescope

    for name in saescope.__all__:
        assert getattr(saescope, name) is not None
    for name in saescope.bias.__all__:
        assert getattr(saescope.bias, name) is not None


def test_modules_stay_small():
    long = [f"{p.relative_to(PACKAGE)}: {n}" for _, p in _modules() if (n := len(p.read_text().splitlines())) > 300]
    assert not long, long


def test_functions_stay_short():
    long = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body_start = node.body[0].lineno
                if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
                    body_start = node.body[0].end_lineno + 1 if len(node.body) > 1 else node.body[0].lineno
                n = node.end_lineno - body_start + 1
                if n > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long


@pytest.mark.parametrize("config", ["saescope.sae.train_config:TrainConfig", "saescope.features.config:ExtractConfig",
                                    "saescope.bias.debias.config:DebiasConfig",
                                    "saescope.steering.contrast.config:ContrastFitConfig"])
def test_every_config_field_has_a_docstring(config):
    import importlib
    from dataclasses import fields

    from saescope.config import field_docs

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    docs = field_docs(cls)
    assert set(docs) == {f.name for f in fields(cls)} and all(len(d) > 5 for d in docs.values())


def test_package_functions_are_not_shadowed_by_submodules():
    import saescope
    from saescope.bias.evaluation import BiasEvaluation  # importing the module first must not hide the function

    assert callable(saescope.bias.evaluate) and BiasEvaluation.__name__ == "BiasEvaluation"
    assert callable(saescope.bias.plan_debias) and callable(saescope.steering.load_intervention)


@pytest.mark.parametrize("package", ["saescope.bias", "saescope.bias.debias", "saescope.bias.shift",
                                     "saescope.bias.gender_vector", "saescope.activations", "saescope.editing",
                                     "saescope.steering"])
def test_every_lazy_export_resolves(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
