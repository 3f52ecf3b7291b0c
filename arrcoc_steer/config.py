"""Config dataclasses that are also command lines: one field, one documented ``--flag``.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     steps: int = option(10, "how many steps")
...     tasks: tuple[str, ...] = option(("a", "b"), "task names")
>>> parser = argparse.ArgumentParser()
>>> add_options(parser, Demo)
>>> from_args(Demo, parser.parse_args(["--steps", "3", "--tasks", "x"]))
Demo(steps=3, tasks=('x',))
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import field


def option(default, help: str):
    """A dataclass field with a default and the help text of its command-line flag."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of dataclass ``cls`` (bools get --x/--no-x, tuples take several values)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        hint, default = hints[f.name], f.default
        help_ = f.metadata.get("help", "").replace("%", "%%")
        if hint is bool:
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif typing.get_origin(hint) is tuple:
            (inner, *_) = typing.get_args(hint)
            parser.add_argument(_flag(f.name), dest=f.name, nargs="+", type=inner, default=default, help=f"{help_} (default: {' '.join(map(str, default))})")
        else:
            base = next((t for t in typing.get_args(hint) if t is not type(None)), hint) if typing.get_origin(hint) else hint
            shown = "" if default is None else " (default: %(default)s)"
            parser.add_argument(_flag(f.name), dest=f.name, type=base, default=default, help=help_ + shown)


def from_args(cls, args: argparse.Namespace, **overrides):
    """Build ``cls`` from parsed flags (fields absent from ``args`` keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init and hasattr(args, f.name)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**{**values, **overrides})
