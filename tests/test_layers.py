"""The architecture rules: imports only go down the layers, ``import saescope`` stays light,
no module over ~300 lines, and every config field has a docstring."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "saescope"

# Lower numbers are lower layers. Top-level helper modules are layer 0 and may import each other.
LAYERS = {"model": 1, "parallel": 1, "sae": 2, "features": 3, "steering": 3, "circuits": 4, "editing": 4, "autointerp": 4,
          "bias": 5, "app": 6, "cli": 7}
TOP = {"legacy": 7}  # the 0.1 re-exports: above everything, they point at every package
SIDEWAYS_OK: set[tuple[str, str]] = set()


def _unit(module: str) -> str:
    """``saescope.steering.contrast.fit`` -> ``steering``; ``saescope.storage`` -> ``storage``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rank(unit: str) -> int:
    return LAYERS.get(unit, TOP.get(unit, 0))


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        out.append((".".join(parts), path))
    return out


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "saescope" or name.startswith("saescope.")]


def test_imports_only_go_down_the_layers():
    bad = []
    for module, path in _modules():
        here = _unit(module)
        for line, target in _imports(path):
            there = _unit(target)
            if there == here or module == "saescope" or here in TOP:
                continue
            if target == "saescope":
                bad.append(f"{path.name}:{line} imports the top-level package")
            elif _rank(there) > _rank(here) or (_rank(there) == _rank(here) > 0 and (here, there) not in SIDEWAYS_OK):
                bad.append(f"{module}:{line} imports {target} (layer {_rank(there)} from layer {_rank(here)})")
    assert not bad, "\n".join(bad)


def test_the_rule_catches_an_upward_import(tmp_path):
    assert _rank(_unit("saescope.bias.evaluation")) > _rank(_unit("saescope.model.hooks"))
    assert _rank(_unit("saescope.features.run")) == _rank(_unit("saescope.steering.base"))  # sideways: refused
    assert _rank(_unit("saescope.storage")) == 0


def test_import_saescope_is_light():
    code = ("import sys, saescope; heavy = [m for m in ('torch', 'numba', 'pandas', 'scipy', 'transformers') "
            "if m in sys.modules]; print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_public_names_and_old_paths_resolve():
    import saescope
    from saescope.feature_run import FeatureRun, sae_fingerprint  # 0.1 paths, kept for one release
    from saescope.interventions import FeatureEdit as OldEdit
    from saescope.models import load_model

    for name in saescope.__all__:
        assert getattr(saescope, name) is not None
    assert load_model is saescope.load_model and OldEdit is saescope.FeatureEdit
    assert FeatureRun is saescope.FeatureRun and callable(sae_fingerprint)


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
                                    "saescope.bias.config:DebiasConfig",
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
