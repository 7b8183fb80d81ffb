"""The trainer's layering, checked in a fresh interpreter: the package root loads no Ray
and no torch; nothing but ``distributed`` loads Ray; evaluation never imports the recipe;
the model package imports no other part of the trainer; no module imports a module
that imports it back."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "data", "train", "evaluation")


def modules_after(statement: str) -> set[str]:
    """The names in sys.modules after running ``statement`` in a fresh interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=180)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_package_root_loads_no_ray_and_no_torch():
    loaded = modules_after("import trainer, trainer.model, trainer.data, trainer.train, trainer.evaluation")
    assert not {"ray", "torch", "transformers"} & loaded


@pytest.mark.parametrize(
    "module",
    ["trainer.evaluation.evaluate", "trainer.evaluation.predict", "trainer.evaluation.inference"],
)
def test_evaluation_imports_neither_the_recipe_nor_ray(module):
    loaded = modules_after(f"import {module}")
    assert "trainer.train.recipe" not in loaded and "ray" not in loaded


def test_training_in_one_process_loads_no_ray():
    loaded = modules_after("import trainer.train.recipe, trainer.train.launch")
    assert "ray" not in loaded


def _trainer_imports(path: Path) -> set[str]:
    """Every ``trainer.*`` module a file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainer"):
            names = {f"{node.module}.{a.name}" for a in node.names}
            found |= {n for n in names if (REPO / (n.replace(".", "/") + ".py")).exists()} or {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("trainer")}
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in (REPO / "trainer").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in _trainer_imports(path) if m != name}
    return graph


def test_no_import_circle_and_packages_import_only_those_above():
    graph = _graph()
    rank = {p: i for i, p in enumerate(PACKAGES)}

    def package(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 2 and parts[1] in rank else None

    upward = [
        (m, d)
        for m, deps in graph.items()
        for d in deps
        if package(m) and package(d) and rank[package(d)] > rank[package(m)]
    ]
    assert upward == [], f"a package imports one below it: {upward}"

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return seen

    circles = sorted(m for m in graph if m in reach(m))
    assert circles == [], f"modules in an import circle: {circles}"
