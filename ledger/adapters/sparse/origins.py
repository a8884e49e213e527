"""Origins named by strings: an absolute folder path, ``file:///path`` or ``s3://bucket/prefix``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from ledger.adapters.git.push import strip_credentials
from ledger.adapters.sparse.backends import Backend, FolderBackend
from ledger.adapters.sparse.s3 import S3Backend, split_s3_url
from ledger.domain.errors import Invalid


def parse_origin(
    origin: str,
    *,
    endpoint_url: str | None = None,
    connect_timeout_ms: int = 5000,
    timeout_ms: int = 15000,
) -> Backend:
    """The backend an origin string names: an absolute folder path, ``file:///path`` or
    ``s3://bucket/prefix``; :class:`~ledger.domain.errors.Invalid` naming what is wrong."""
    shown = strip_credentials(origin)
    if "\0" in origin:
        raise Invalid(f"origin {shown!r} holds a NUL character", origin=shown)
    if origin.startswith("/"):
        return FolderBackend(Path(origin))
    if origin.startswith("file:"):
        parts = urlsplit(origin)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise Invalid(f"origin {shown!r} is not a local folder: use file:///absolute/path", origin=shown)
        if parts.query or parts.fragment:
            raise Invalid(f"origin {shown!r} has a query or fragment, which a folder has not", origin=shown)
        return FolderBackend(Path(unquote(parts.path)))
    if origin.startswith("s3://"):
        bucket, prefix = split_s3_url(origin)
        return S3Backend(
            bucket,
            prefix,
            endpoint_url,
            connect_timeout_ms=connect_timeout_ms,
            timeout_ms=timeout_ms,
        )
    raise Invalid(
        f"origin {shown!r} is not understood: use an absolute folder path, file:///path or s3://bucket/prefix",
        origin=shown,
    )
