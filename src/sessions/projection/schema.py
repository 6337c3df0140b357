"""Where the read models' schemas live (projections/<name>/), and their versions."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import sessions


@cache
def projections_dir() -> Path:
    # Installed: shipped inside the package. From a checkout: the repo's folder.
    for candidate in (
        Path(sessions.__file__).parent / "projections",
        Path(sessions.__file__).resolve().parents[2] / "projections",
    ):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("the projections/ folder was not found")


def version(name: str) -> int:
    return int((projections_dir() / name / "VERSION").read_text().strip())


def create_statements(name: str, backend: str, table: str) -> list[str]:
    text = (projections_dir() / name / f"{backend}.sql").read_text()
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    return [
        s.strip().format(table=table, name=name) for s in "\n".join(lines).split(";") if s.strip()
    ]
