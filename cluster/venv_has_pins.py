"""Exit 0 if this Python environment already satisfies a project's pins, else 1.

    python cluster/venv_has_pins.py pyproject.toml

Checks every dependency of ``[project] dependencies`` (and, recursively, what
each installed dependency requires, extras included: ``ray[data]`` needs
pandas and pyarrow), and that the project itself is installed. Standard
library only, plus ``packaging`` (pip's copy when the venv has no other), so
it runs in a venv that holds nothing yet. cluster.local.yaml runs it before
``pip install``: a venv that already has the pins is reused as it is, and pip
runs only when something is missing or at another version.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a fresh venv: pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name


def wanted(req: Requirement, extras: set[str]) -> bool:
    """Whether ``req`` applies here, for a parent installed with ``extras``."""
    return req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras | {""})


def first_mismatch(requirements: list[str]) -> str | None:
    """The first requirement (or requirement of a requirement) this environment
    does not satisfy, as a sentence; None when all are satisfied."""
    stack = [(Requirement(r), set()) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while stack:
        req, parent_extras = stack.pop()
        if not wanted(req, parent_extras):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            return f"{req} is wanted, {req.name} is not installed"
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            return f"{req} is wanted, {req.name} {version} is installed"
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key not in seen:
            seen.add(key)
            stack += [(Requirement(r), set(req.extras)) for r in metadata.requires(req.name) or []]
    return None


def main(pyproject: str) -> int:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    problem = first_mismatch([f"{project['name']}=={project['version']}", *project.get("dependencies", [])])
    if problem:
        print(f"venv_has_pins: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} PYPROJECT_TOML")
    sys.exit(main(sys.argv[1]))
