"""Command-line options from a dataclass config: one flag per field, its help from the field's metadata."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["opt", "parse_dataclass"]

T = TypeVar("T")


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a default and help text (``choices``, ``positional``, ``secret`` in metadata)."""
    return dataclasses.field(default=default, metadata={"help": help, **kw}, repr=not kw.get("secret", False))


def _parser(cls: type, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(cls):
        meta, default = f.metadata, f.default
        shown = "" if meta.get("secret") or default is None else f" (default: {default})"
        kw: dict[str, Any] = {"help": meta["help"] + shown, "default": default}
        if meta.get("positional"):
            p.add_argument(f.name, nargs="?", **kw)
        elif isinstance(default, bool):
            p.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction, **kw)
        else:
            t = str(f.type)
            caster = float if t.startswith("float") else int if t.startswith("int") else str
            p.add_argument("--" + f.name.replace("_", "-"), type=caster, choices=meta.get("choices"), **kw)
    return p


def parse_dataclass(cls: type[T], argv: Sequence[str] | None, description: str = "") -> T:
    """Parse ``argv`` into ``cls``; a value its ``__post_init__`` refuses exits with usage and the reason."""
    parser = _parser(cls, description)
    args = vars(parser.parse_args(argv))
    try:
        return cls(**args)
    except ValueError as e:
        parser.error(str(e))
