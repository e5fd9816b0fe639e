"""Command-line spellings of the trainers' Config fields, shared by `creditgym train` and the examples.

tyro turns a Config dataclass into flags (`--field-name VALUE`, `--flag` / `--no-flag`); these rules
add what its defaults lack for our configs: JSON for dict, list and tuple fields
(`--env-kwargs '{"hops": [3, 3]}'`) and `None` / `none` / `null` for an optional scalar. They live
here, beside the configs, rather than in the CLI so that an example script (which must not import
the CLI layer) parses the same flags the same way: `tyro.cli(Args, registry=CONFIG_FLAGS)`.
"""

from __future__ import annotations

import json
import types
import typing

from tyro.constructors import ConstructorRegistry, PrimitiveConstructorSpec, PrimitiveTypeInfo

__all__ = ["CONFIG_FLAGS"]

CONFIG_FLAGS = ConstructorRegistry()
"""tyro rules for the Config flag spellings: JSON for containers, `none`/`null` for an optional field."""


@CONFIG_FLAGS.primitive_rule
def json_containers(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
    """dict, list and tuple fields take one JSON argument (tyro's default would split them into many)."""
    origin = info.type_origin
    if origin not in (dict, list, tuple):
        return None
    return PrimitiveConstructorSpec(
        nargs=1, metavar="JSON", instance_from_str=lambda a: origin(json.loads(a[0])) if origin is tuple else json.loads(a[0]),
        is_instance=lambda x: isinstance(x, origin), str_from_instance=lambda x: [json.dumps(x)],
    )  # fmt: skip


@CONFIG_FLAGS.primitive_rule
def optional_scalars(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
    """`int | None`, `float | None` and `str | None` fields accept `None` (any case) or `null`."""
    args = typing.get_args(info.type)
    base = [a for a in args if a is not type(None)]
    if info.type_origin not in (typing.Union, types.UnionType) or len(args) != 2 or base[0] not in (int, float, str):
        return None
    cast = base[0]
    return PrimitiveConstructorSpec(
        nargs=1, metavar=f"{cast.__name__.upper()}|None",
        instance_from_str=lambda a: None if a[0].lower() in ("none", "null") else cast(a[0]),
        is_instance=lambda x: x is None or isinstance(x, cast), str_from_instance=lambda x: [str(x)],
    )  # fmt: skip
