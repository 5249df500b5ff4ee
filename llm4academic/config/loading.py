"""Loading a study's params: YAML in, ``--set`` overrides applied to the raw tree, validated ``StudyParams`` out.

A key given twice in one mapping is an error naming both lines. Problems are ``ConfigError``s that name the params
file, the line (found through the YAML node tree) and the key path
(``data.sources[1].path``); a problem in an override names the ``--set`` it came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..base import unique_key_loader
from .schema import ConfigError, StudyParams

_UniqueKeyLoader = unique_key_loader(ConfigError)  # `seed: 1` then `seed: 2` is an error naming both lines

_KEY = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_key_path(key: str) -> list[str | int]:
    """``data.sources[1].weight`` → ``['data', 'sources', 1, 'weight']``."""
    parts: list[str | int] = []
    pos = 0
    for m in _KEY.finditer(key):
        gap = key[pos : m.start()]
        if gap not in ("", "."):
            raise ConfigError(f"--set {key}: cannot parse the key path near {gap!r}")
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if not parts or key[pos:]:
        raise ConfigError(f"--set {key}: cannot parse the key path")
    return parts


def format_key_path(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def apply_override(tree: dict, assignment: str) -> None:
    """Apply one ``a.b[0].c=value`` (value parsed as YAML) to a raw params tree, in place."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set data.on_invalid=skip")
    path = parse_key_path(key.strip())
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {assignment}: value is not valid YAML: {e}") from None
    node: Any = tree
    for i, part in enumerate(path):
        last = i == len(path) - 1
        where = format_key_path(path[: i + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                size = len(node) if isinstance(node, list) else "no"
                raise ConfigError(f"--set {assignment}: {where} does not exist (the list has {size} items)")
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {assignment}: {format_key_path(path[:i])} is not a mapping")
        if last:
            node[part] = value
        else:
            if isinstance(part, str) and part not in node:
                node[part] = {}
            node = node[part]


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """1-based line of the deepest YAML node on the key path ``loc``."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        nxt = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if getattr(k, "value", None) == part:
                    nxt, line = v, k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        node = nxt
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _overridden(loc: Sequence[str | int], overrides: Sequence[str]) -> str | None:
    path = format_key_path(loc)
    for o in overrides:
        key = o.partition("=")[0].strip()
        if path == key or path.startswith(key + ".") or path.startswith(key + "[") or key.startswith(path + "."):
            return o
    return None


def load_params(path: str | os.PathLike, overrides: Sequence[str] = ()) -> StudyParams:
    """Read, override and validate a study's params; any problem raises ``ConfigError`` naming the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    text = path.read_text(encoding="utf-8")
    loader = _UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        raw = loader.get_single_data()
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of study params at the top level, got {type(raw).__name__}")
    for o in overrides:
        apply_override(raw, o)
    try:
        return StudyParams.model_validate(raw, context={"base_dir": path.resolve().parent})
    except ValidationError as e:
        lines = [f"{path}: invalid study params ({e.error_count()} problem{'s' * (e.error_count() > 1)}):"]
        for err in e.errors(include_url=False):
            loc = [p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-")]
            key = format_key_path(loc) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key (allowed here: {', '.join(_allowed_keys(loc))})"
            src = _overridden(loc, overrides)
            if src:
                lines.append(f"  {key}: {msg} [from --set {src}]")
            else:
                line = _line_of(root, loc)
                lines.append(f"  {path}{f':{line}' if line else ''}: {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def _allowed_keys(loc: Sequence[str | int]) -> list[str]:
    """The keys the schema allows at the mapping that holds ``loc``'s last key."""
    model: Any = StudyParams
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields) if model is not None else []


def resolved_dict(params: StudyParams) -> dict:
    """The validated params as plain JSON-ready data (paths resolved)."""
    return params.model_dump(mode="json")
