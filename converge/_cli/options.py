"""Options every command shares: broker URL, config file, namespace, data directory, --json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ConfigOpt", "DataDirOpt", "JsonOpt", "NamespaceOpt", "UrlOpt"]

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", "-u", help="NATS URL(s), comma-separated; default: embedded server."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML or TOML config file.")]
NamespaceOpt = Annotated[
    str | None, typer.Option("--namespace", help="Stream namespace (default: converge).")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Local state directory (default: ./.converge).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
