"""The study params: one pydantic schema (``schema.py``), YAML in, validated object out (``loading.py``).

A study is one YAML file. Unknown or misspelt keys, wrong types and missing files are errors that name the
params file, the line and the key path (``data.sources[1].path``). ``--set a.b=c`` overrides are applied to the
YAML before validation, so they are checked exactly like the file. Imports no torch.
"""

from ..base import KitError
from .loading import apply_override, format_key_path, load_params, parse_key_path, resolved_dict
from .schema import *  # noqa: F403  (the schema's classes and name lists are the config's public names)
from .schema import __all__ as _schema_names

__all__ = [
    "KitError",
    "apply_override",
    "format_key_path",
    "load_params",
    "parse_key_path",
    "resolved_dict",
    *_schema_names,
]
