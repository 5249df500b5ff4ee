"""The schema's building blocks: strict models (unknown keys are errors), where relative paths start, uniqueness."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationInfo

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_SLUG = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _base_dir(info: ValidationInfo) -> Path:
    """The params file's folder (relative paths in params start there)."""
    ctx = info.context or {}
    return Path(ctx.get("base_dir", Path.cwd()))


def _check_unique(names: Sequence[str], what: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"duplicate {what} {n!r}")
        seen.add(n)
