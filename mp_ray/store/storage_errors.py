"""S3 failures as one-line :class:`~mp_ray.errors.StorageError` naming the cause and the object.

Before an ``s3://`` store or checkpoint is used, :func:`check_bucket` sends one request (HEAD
of the bucket) without retries; before a data file is read, :func:`check_object` sends a HEAD
of the file itself (which needs no right on the bucket, so public files stay readable). Missing
credentials, an endpoint that cannot be reached, a missing bucket or refused access thus fail
within a second, before anything is read or written. The work itself keeps s3fs's retries;
:func:`storage_errors` still turns a later storage failure into a :class:`StorageError`. Only
storage failures are translated: any other exception passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import fsspec
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from mp_ray.errors import MpRayError, StorageError, one_line

CHECK_CONNECT_TIMEOUT_S = 5


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def bucket_of(uri: str) -> str:
    return uri.removeprefix("s3://").split("/", 1)[0]


def check_bucket(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Raise :class:`StorageError` unless the bucket of the ``s3://`` ``uri`` answers; other
    URIs pass. ``storage_options`` are the fsspec options the access will use."""
    _check(uri, storage_options, bucket_of(uri))


def check_object(uri: str, storage_options: dict[str, Any] | None = None) -> None:
    """Like :func:`check_bucket` for the ``s3://`` object ``uri`` itself; a missing object
    raises FileNotFoundError."""
    _check(uri, storage_options, uri.removeprefix("s3://"))


def _check(uri: str, storage_options: dict[str, Any] | None, path: str) -> None:
    """One HEAD of ``path`` (bucket or object of ``uri``): one attempt, a short connect
    timeout, credentials read afresh."""
    if not is_s3_uri(uri):
        return
    options = dict(storage_options or {})
    options["config_kwargs"] = {
        **options.get("config_kwargs", {}),
        "retries": {"total_max_attempts": 1},
        "connect_timeout": CHECK_CONNECT_TIMEOUT_S,
    }
    with storage_errors(uri, storage_options):
        fsspec.filesystem("s3", skip_instance_cache=True, **options).info(path)


@contextmanager
def storage_errors(uri: str, storage_options: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn a storage failure while accessing ``uri`` into a :class:`StorageError`."""
    try:
        yield
    except MpRayError:
        raise
    except (BotoCoreError, ClientError, OSError) as err:
        translated = translate(err, uri, storage_options)
        if translated is None:
            raise
        raise translated from err


def translate(
    err: BaseException, uri: str, storage_options: dict[str, Any] | None = None
) -> StorageError | None:
    """The :class:`StorageError` for a storage failure ``err`` while accessing ``uri``, or
    None when ``err`` is not one (a local missing file is left to the caller)."""
    if isinstance(err, NoCredentialsError):
        return StorageError(
            f"no AWS credentials found for {uri}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if isinstance(err, BotoConnectionError):
        endpoint = _endpoint(err, storage_options)
        return StorageError(f"cannot reach the S3 endpoint {endpoint} for {uri}: {_reason(err)}")
    client_error = _client_error(err)
    code = client_error.response.get("Error", {}).get("Code") if client_error else None
    operation = client_error.operation_name if client_error else None
    bucket = bucket_of(uri)
    if code == "NoSuchBucket" or (operation == "HeadBucket" and isinstance(err, FileNotFoundError)):
        return StorageError(f"S3 bucket {bucket!r} does not exist (for {uri})")
    if isinstance(err, PermissionError):
        if operation == "HeadBucket":
            return StorageError(
                f"access denied to S3 bucket {bucket!r} (for {uri}): {one_line(err)}"
            )
        during = f" ({operation})" if operation else ""
        return StorageError(f"access denied to {uri}{during}: {one_line(err)}")
    if isinstance(err, FileNotFoundError) or not is_s3_uri(uri):
        return None
    return StorageError(f"S3 request for {uri} failed: {one_line(err)}")


def _endpoint(err: BotoConnectionError, storage_options: dict[str, Any] | None) -> str:
    """scheme://host:port of the endpoint the failed request went to."""
    url = err.kwargs.get("endpoint_url") or (storage_options or {}).get("endpoint_url") or ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url or "(default AWS)"


def _reason(err: BotoConnectionError) -> str:
    if isinstance(err, ConnectTimeoutError):
        return "connection timed out"
    if any(isinstance(e, ConnectionRefusedError) for e in _chain(err)):
        return "connection refused"
    return one_line(_chain(err)[-1])


def _client_error(err: BaseException) -> ClientError | None:
    """The first botocore ClientError (an S3 answer) behind ``err``, if any."""
    return next((cause for cause in _chain(err) if isinstance(cause, ClientError)), None)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and its causes / contexts, outermost first."""
    chain = [err]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) and nxt not in chain:
        chain.append(nxt)
    return chain
