"""The sparse index: the cargo index as plain files behind HTTP, written to a folder or a bucket."""

from ledger.adapters.sparse.backends import MARKER_KEY, Backend, FolderBackend
from ledger.adapters.sparse.index import SparseIndex
from ledger.adapters.sparse.origins import parse_origin
from ledger.adapters.sparse.s3 import S3Backend

__all__ = ["MARKER_KEY", "Backend", "FolderBackend", "S3Backend", "SparseIndex", "parse_origin"]
