"""Resolve a store URI to a zarr store: a local path, ``s3://`` (s3fs) or ``memory://name``.

Local paths are made absolute so that Ray actors with another working directory write to
the same place. ``memory://`` stores live in this process only (a registry keeps them alive
by name, so a reopen sees the same data); they cannot be shared with Ray actors. Opening an
``s3://`` store first checks its bucket (:func:`~mp_ray.store.storage_errors.check_bucket`).
"""

from __future__ import annotations

import os
from typing import Any

import zarr.storage

from mp_ray.store.storage_errors import check_bucket

_MEMORY_STORES: dict[str, zarr.storage.MemoryStore] = {}

S3_DEFAULT_OPTIONS = {"use_listings_cache": False}


def is_memory_uri(uri: str) -> bool:
    return uri.startswith("memory://")


def is_remote_uri(uri: str) -> bool:
    return "://" in uri and not uri.startswith(("file://", "memory://"))


def normalise_uri(uri: str) -> str:
    """Absolute local path for local URIs (``file://`` stripped); remote URIs unchanged."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if is_remote_uri(uri) or is_memory_uri(uri):
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri))


def storage_options_for(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """fsspec options for a remote URI: the given ones over mp-ray's S3 defaults."""
    if not is_remote_uri(uri):
        return {}
    options = dict(S3_DEFAULT_OPTIONS) if uri.startswith("s3://") else {}
    options.update(storage_options or {})
    return options


def open_store(
    uri: str, storage_options: dict[str, Any] | None = None, read_only: bool = False
) -> zarr.storage.StoreLike:
    """The zarr store behind ``uri`` (see the module docstring for the accepted forms)."""
    uri = normalise_uri(uri)
    if is_memory_uri(uri):
        return _MEMORY_STORES.setdefault(uri, zarr.storage.MemoryStore())
    if is_remote_uri(uri):
        options = storage_options_for(uri, storage_options)
        check_bucket(uri, options)
        return zarr.storage.FsspecStore.from_url(uri, storage_options=options, read_only=read_only)
    return zarr.storage.LocalStore(uri, read_only=read_only)
