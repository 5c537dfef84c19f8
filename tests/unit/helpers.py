"""What the unit tests share."""

from __future__ import annotations

from pathlib import Path


def executable(folder: Path, name: str) -> Path:
    """A stand-in program ``name`` in ``folder``, for tests of what is found on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path
