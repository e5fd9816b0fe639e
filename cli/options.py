"""Options shared by the commands: env sources and JSON objects, as usage errors when wrong."""

from __future__ import annotations

from typing import Any

import typer

from creditgym.sources import import_env_source, json_object


def env_source(value: str | None) -> str | None:
    """Typer callback: `ENV_ID`, `FILE.py:ENV_ID` or `module:ENV_ID` -> the env id (file or module imported)."""
    try:
        return None if value is None else import_env_source(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def json_object_option(value: str) -> dict[str, Any]:
    """A JSON object option (`--env-kwargs '{"hops": 3}'`) -> dict, or a usage error that says so."""
    try:
        return json_object(value)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
