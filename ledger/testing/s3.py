"""An S3 server on 127.0.0.1 for tests and demos: moto's, in a thread of this process.

A bucket made with ``public=True`` lets anyone read its objects with a plain GET at
``<endpoint>/<bucket>/<key>`` (path style, no signature): a bucket can then serve as its own
public URL, the way a sparse index is served from a bucket behind a CDN. moto keeps its buckets
in process-wide state, which :meth:`S3Server.stop` resets.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # noqa: S105 - moto accepts any key; nothing is protected by it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class S3Server:
    """moto's S3 server on 127.0.0.1 and a free port, for the length of a ``with`` block."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server: Any = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        """Forget every bucket and stop the server."""
        if self._server is None:
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        except OSError:
            pass
        finally:
            conn.close()
        self._server.stop()
        self._server = None

    def env(self) -> dict[str, str]:
        """The environment variables a boto3 client needs to use this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self) -> S3Client:
        """A boto3 client of this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str, *, public: bool = True) -> None:
        """Create the bucket ``name``; ``public``: anyone may GET its objects, without signing."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
            if public:
                policy = {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": "*",
                            "Action": "s3:GetObject",
                            "Resource": f"arn:aws:s3:::{name}/*",
                        }
                    ],
                }
                client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
        finally:
            client.close()

    def public_url(self, bucket: str, prefix: str = "") -> str:
        """The path-style URL that serves ``bucket``'s objects below ``prefix``, ending in ``/``."""
        tail = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        return f"{self.endpoint_url}/{bucket}/{tail}"
