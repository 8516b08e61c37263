"""Result files a command writes (tables, values, plots, reports): checked before the work
starts, written whole or not at all.

:func:`check_output` runs when a command parses its options, so an output that can never be
written is refused before hours of work; :func:`atomic_output` gives the writer a temporary
name beside the target and renames it onto the target only once the write has finished,
creating missing parent folders, so an interrupted write never leaves half a file.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mp_ray.errors import InputError


def check_output(path: Path, option: str) -> Path:
    """``path`` if it can be written once its missing parent folders are created; else an
    :class:`InputError` naming ``option``. Creates nothing."""
    if path.is_dir():
        raise InputError(f"{option} {path} is a folder; give a file name")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK) or (
        path.exists() and not os.access(path, os.W_OK)
    ):
        raise InputError(f"{option} {path}: no permission to write in {ancestor}")
    return path


def check_output_folder(path: Path, option: str) -> Path:
    """``path`` if it is, or can be created as, a writable folder; else an
    :class:`InputError` naming ``option``. Creates nothing."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path} is a file, not a folder")
    check_output(path / "probe", option)
    return path


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to; renamed onto ``path``
    when the block ends without an exception, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def json_ready(data: Any) -> Any:
    """``data`` with every float that JSON cannot hold (NaN: undefined, ±inf) as None (null),
    in nested dicts, lists and tuples."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: json_ready(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [json_ready(value) for value in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    """``data`` as indented JSON at ``path`` (undefined numbers as null), atomically."""
    with atomic_output(path) as partial:
        partial.write_text(json.dumps(json_ready(data), indent=2, allow_nan=False))
