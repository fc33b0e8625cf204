"""How every bench prints its one result: a JSON object (``--json``) or aligned lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def finish(result: dict[str, Any], problems: list[str], *, as_json: bool, check: bool) -> int:
    """Print ``result`` with its ``problems``; the exit code (1 when checking and any)."""
    result["problems"] = problems
    emit(result, as_json=as_json)
    return 1 if check and problems else 0


def emit(result: Mapping[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    width = max((len(key) for key in result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")
