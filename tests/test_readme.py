"""The README's commands and its tour stay true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _after_marker(marker: str) -> str:
    lines = README.read_text().splitlines()
    index = lines.index(f"<!-- {marker} -->")
    return next(line for line in lines[index + 1 :] if line and not line.startswith("```"))


def test_readme_names_both_commands() -> None:
    assert "converge run" in _after_marker("main-command")
    assert "pytest" in _after_marker("test-command")


@pytest.mark.nats
@pytest.mark.asyncio
async def test_readme_tour_runs(nats_url: str, namespace: str) -> None:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README.md has no python tour"
    source = block.group(1).replace("nats://127.0.0.1:4222", nats_url)
    source = source.replace('namespace="demo"', f'namespace="{namespace}"')
    source = source.replace("asyncio.run(main())", "")
    scope: dict[str, object] = {}
    exec(compile(source, "README.md", "exec"), scope)
    await scope["main"]()  # type: ignore[operator]
