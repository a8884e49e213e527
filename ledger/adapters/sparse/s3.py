"""An origin in an S3 bucket (or any S3-compatible store): one object per key, below a prefix.

Uploads, downloads and deletes run on a pool of :data:`WORKERS` threads sharing one boto3
client (clients are thread-safe), at most a few times that many requests in flight, so a push
of a whole index (139k files) is not one request after another. Credentials and region come
from the usual AWS environment variables and files; the endpoint from ``endpoint_url``, else
``AWS_ENDPOINT_URL``. The bucket must let the ledger list it (``s3:ListBucket``): without that
S3 answers a missing key with *access denied*, which cannot be told from a refused write.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from ledger.adapters.git.push import strip_credentials
from ledger.adapters.sparse.backends import MARKER_KEY, Backend, is_index_key
from ledger.domain.errors import Invalid, RemoteUnavailable

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

WORKERS = 32
"""Requests to the bucket at once."""

IN_FLIGHT = 4 * WORKERS
"""Requests submitted and not yet answered, at most: bounds what a long upload holds in memory."""

DELETE_BATCH = 1000
"""Keys per ``DeleteObjects`` request (S3's limit)."""

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")

_A = TypeVar("_A")
_R = TypeVar("_R")


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as ``(bucket, prefix)``; :class:`Invalid` naming what is wrong."""
    shown = strip_credentials(url)
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise Invalid(f"origin {shown!r} holds credentials: give them as AWS_* variables", origin=shown)
    if parts.query or parts.fragment:
        raise Invalid(f"origin {shown!r} has a query or fragment, which an S3 origin has not", origin=shown)
    bucket = parts.netloc
    if not bucket:
        raise Invalid(f"origin {shown!r} names no bucket: use s3://bucket/prefix", origin=shown)
    if _BUCKET.fullmatch(bucket) is None:
        raise Invalid(f"origin {shown!r}: {bucket!r} is not a valid S3 bucket name", origin=shown)
    prefix = parts.path.strip("/")
    if prefix and not is_index_key(prefix):
        raise Invalid(f"origin {shown!r}: the prefix {prefix!r} has an empty or hidden part", origin=shown)
    return bucket, prefix


def _content_type(key: str) -> str:
    return "application/json" if key == "config.json" else "text/plain; charset=utf-8"


class S3Backend(Backend):
    """The index's files as objects ``<prefix>/<key>`` of one bucket."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None = None,
        *,
        connect_timeout_ms: int = 5000,
        timeout_ms: int = 15000,
    ) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = f"{self.prefix}/" if self.prefix else ""
        self.origin = f"s3://{bucket}/{self.prefix}"
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        config = Config(
            connect_timeout=connect_timeout_ms / 1000,
            read_timeout=timeout_ms / 1000,
            max_pool_connections=WORKERS,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        try:
            self._client: S3Client = boto3.client("s3", endpoint_url=endpoint, config=config)
        except (BotoCoreError, ValueError) as exc:
            shown = strip_credentials(str(endpoint))
            raise Invalid(f"cannot use the S3 endpoint {shown!r} for {self.origin}: {exc}") from exc

    def get(self, key: str) -> bytes | None:
        try:
            return self._get(key)
        except _errors() as exc:
            raise self._unavailable(f"read {key} from", exc) from exc

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=self._base + key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        return reply["Body"].read()

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        def one(key: str) -> tuple[str, bytes | None]:
            return key, self._get(key)

        yield from self._concurrently("read files from", one, keys)

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> dict[str, str]:
        def one(item: tuple[str, bytes]) -> tuple[str, str]:
            key, data = item
            reply = self._client.put_object(
                Bucket=self.bucket, Key=self._base + key, Body=data, ContentType=_content_type(key)
            )
            return key, reply["ETag"]

        return dict(self._concurrently("write files to", one, items))

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        batches: list[list[str]] = []
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                batches.append(batch)
                batch = []
        if batch:
            batches.append(batch)

        def one(keys: list[str]) -> None:
            reply = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._base + key} for key in keys], "Quiet": True},
            )
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0]
                text = f"{first.get('Key', '?')}: {first.get('Code', '')} {first.get('Message', '')}".strip()
                raise RemoteUnavailable(
                    f"cannot delete {len(errors)} file(s) from {self.origin}: {text}", remote=self.origin
                )

        for _ in self._concurrently("delete files from", one, batches):
            pass

    def listing(self) -> Iterator[tuple[str, str]]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._base):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self._base) :]
                    if is_index_key(key):
                        yield key, item["ETag"]
        except _errors() as exc:
            raise self._unavailable("list", exc) from exc

    def put_marker(self, data: bytes) -> None:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=self._base + MARKER_KEY, Body=data, ContentType="text/plain"
            )
        except _errors() as exc:
            raise self._unavailable("write the head marker to", exc) from exc

    def flush(self) -> None:
        """Nothing to do: S3 has stored an object once its upload is answered."""

    def close(self) -> None:
        self._client.close()

    def _concurrently(self, action: str, work: Callable[[_A], _R], args: Iterable[_A]) -> Iterator[_R]:
        """``work(arg)`` for every arg on the pool, with a bounded number in flight; results as
        they complete. The first failure stops the submissions and is raised, naming ``action``."""
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="s3") as pool:
            pending: set[Future[_R]] = set()
            try:
                for arg in args:
                    pending.add(pool.submit(work, arg))
                    if len(pending) >= IN_FLIGHT:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            yield future.result()
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            except _errors() as exc:
                for future in pending:
                    future.cancel()
                raise self._unavailable(action, exc) from exc

    def _unavailable(self, action: str, exc: BaseException) -> RemoteUnavailable:
        if isinstance(exc, RemoteUnavailable):
            return RemoteUnavailable(exc.message, **exc.details)
        return RemoteUnavailable(
            f"cannot {action} {self.origin}: {strip_credentials(_describe(exc, self.bucket))}",
            remote=self.origin,
        )


def _errors() -> tuple[type[BaseException], ...]:
    """What a call to the bucket raises when the bucket cannot be used (botocore is loaded lazily)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, RemoteUnavailable, OSError)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    error = response.get("Error") or {}
    return str(error.get("Code", ""))


def _describe(exc: BaseException, bucket: str) -> str:
    """What went wrong, in words that :func:`~ledger.domain.errors.classify_error` reads."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        return _refusal(exc, bucket)
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return f"timed out: {exc}"
    if isinstance(exc, EndpointConnectionError):
        return f"failed to connect: {exc}"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    return f"{type(exc).__name__}: {exc}"


def _refusal(exc: BaseException, bucket: str) -> str:
    """What the store's error answer says, the bucket named."""
    code = _code(exc)
    if code == "NoSuchBucket":
        return f"the bucket {bucket!r} does not exist"
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"access to the bucket {bucket!r} is denied ({code})"
    return str(exc)
