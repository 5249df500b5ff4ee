"""``python -m benchmarks [--quick] [--json] [--case P1,P3] [--out FILE]``: the ``llm4academic bench`` command."""

import typer

from llm4academic.base import setup_environment
from llm4academic.cli import app

setup_environment()
typer.main.get_command(app).commands["bench"].main(prog_name="python -m benchmarks")
