"""Objects named in a config by import path, ``package.module:name`` (plug-ins)."""

from __future__ import annotations

import importlib
from typing import Any


def resolve(path: str) -> Any:
    """The object ``path`` names: module ``package.module``, then attribute ``name`` (dotted
    names reach nested attributes). Raises ValueError naming ``path`` when it has another
    form, its module cannot be imported or the module lacks the name."""
    module_name, colon, attribute = path.partition(":")
    if not (colon and module_name and attribute):
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:name'")
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{path!r} does not resolve: cannot import {module_name}: {err}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{path!r} does not resolve: {module_name} has no {attribute}")
        target = getattr(target, part)
    return target
