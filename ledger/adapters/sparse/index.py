"""The sparse edge of the ledger: the cargo index as plain files behind HTTP (RFC 2789).

A :class:`SparseIndex` writes heads as commits of a *shadow* bare repository (the same commit
writer as the git index), so every local read and write of the port works the same. Only the
far side differs: a head is published by writing the files that changed since the origin's head
to the *origin* (a folder or an S3 bucket, see :mod:`ledger.adapters.sparse.backends`), then
the head marker naming it. Nothing is ever forced: a marker this side cannot place below the
new head refuses the push. What the uploader says is recorded, never trusted; only
:meth:`SparseIndex.read_back`, which reads the files through the public URL as cargo does (a
stale CDN edge included), confirms a push.

The origin's files can change without the marker saying so (a hand edit, a sync tool), so
:meth:`SparseIndex.survey` lists them instead, reading only what changed since the last survey.

Failures to reach the origin or the public URL become
:class:`~ledger.domain.errors.RemoteUnavailable`. Not thread-safe: one instance per thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

import pygit2

from ledger.adapters.git.push import strip_credentials
from ledger.adapters.git.writing import open_bare
from ledger.adapters.sparse import judging
from ledger.adapters.sparse.backends import Backend
from ledger.adapters.sparse.origins import parse_origin
from ledger.adapters.sparse.public import PublicIndex, check_url
from ledger.adapters.sparse.state import State
from ledger.adapters.sparse.surveying import OriginReader
from ledger.domain.errors import InfrastructureError, Invalid, RemoteUnavailable, classify_error
from ledger.logs import log_step
from ledger.ports import PushReport, ReadBack

__all__ = ["SparseIndex"]

READ_BACK_SHARED_FROM = 64
"""From this many files, a read-back reads on several connections at once."""
READ_BACK_CONNECTIONS = 8
BULK_UPLOAD_PATHS = 1000
"""Past this many changed paths, a push reads the commit's files in one walk."""
INVALIDATION_PATHS = 1000
"""The most paths one invalidation names; a larger change invalidates the whole index."""
METHOD = "sparse-http-get"


class SparseIndex(OriginReader):
    """A shadow bare repository of the index, the origin its files are written to, and the
    public URL cargo reads them from."""

    def __init__(
        self,
        repo: pygit2.Repository,
        backend: Backend,
        public: PublicIndex,
        *,
        invalidate_url: str | None = None,
        author: tuple[str, str] = ("ledger", "ledger@localhost"),
    ) -> None:
        self._repo = repo
        self._backend = backend
        self._public = public
        self._invalidate_url = invalidate_url
        self._author = author
        self._state = State(Path(repo.path))
        self._owns_backend = True

    @classmethod
    def open(
        cls,
        path: Path,
        public_url: str,
        origin: str | Backend,
        *,
        invalidate_url: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout_ms: int = 5000,
        timeout_ms: int = 15000,
        author: tuple[str, str] = ("ledger", "ledger@localhost"),
    ) -> SparseIndex:
        """Open the shadow repository at ``path`` (created when missing) for ``origin``: an
        absolute folder path, ``file:///path``, ``s3://bucket/prefix``, or a :class:`Backend`."""
        if connect_timeout_ms <= 0 or timeout_ms <= 0:
            raise Invalid("network timeouts must be positive", connect_timeout_ms=connect_timeout_ms)
        public = PublicIndex(public_url, connect_timeout_ms=connect_timeout_ms, timeout_ms=timeout_ms)
        if invalidate_url is not None:
            check_url(invalidate_url, "invalidation URL")
        if isinstance(origin, Backend):
            backend = origin
        else:
            backend = parse_origin(
                origin,
                endpoint_url=endpoint_url,
                connect_timeout_ms=connect_timeout_ms,
                timeout_ms=timeout_ms,
            )
        try:
            repo = open_bare(path, "the shadow repository")
        except InfrastructureError:
            backend.close()
            raise
        return cls(repo, backend, public, invalidate_url=invalidate_url, author=author)

    @property
    def remote_url(self) -> str:
        """``sparse+`` and the public URL, as cargo is configured with it (no credentials)."""
        return f"sparse+{self._public.url}"

    @property
    def branch(self) -> str:
        return "sparse"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the repository and the origin's client; the instance cannot be used afterwards."""
        if self._owns_backend:
            self._backend.close()
        self._repo.free()

    def twin(self) -> SparseIndex:
        """The shadow opened again for another thread, sharing the origin's client and the
        public URL's settings: the twin publishes while this handle only writes commits."""
        repo = open_bare(Path(self._repo.path), "the shadow repository")
        twin = SparseIndex(
            repo, self._backend, self._public, invalidate_url=self._invalidate_url, author=self._author
        )
        twin._owns_backend = False
        return twin

    # -- the origin -------------------------------------------------------------------------------

    def fetch(self) -> str | None:
        """The local commit for the origin's head: the one its marker names, or a survey.

        A marker naming a commit of the shadow (or one a survey stood for already) is taken
        as it is; any other (another machine's, or no marker over files) is surveyed. None when
        the origin holds neither a marker nor files.
        """
        marker = self._marker()
        known = self._local_for(marker)
        if known is not None:
            return known
        if marker is None and self._origin_empty():
            return None
        return self._surveyed(marker)

    def survey(self) -> str | None:
        """A commit whose tree is exactly the origin's files (the marker aside), reading only the
        files whose listing changed since the last survey; None when the origin holds none."""
        return self._surveyed(self._marker())

    def push(self, commit: str) -> PushReport:
        """Write ``commit``'s changes over the origin's head, then the marker (never forced).

        The origin's head is its marker read now, placed locally (a commit of the shadow, or the
        survey it stood for); with no marker, what a survey finds (nothing: every file is
        written). A head that ``commit`` does not descend from is a rejection, and nothing is
        written. The files go first and are made durable, the marker last: a push cut short
        leaves the old marker, and the next push writes its files again. When an invalidation
        URL is configured the changed paths are posted to it; a failure there is told in the
        message, and the read-back decides.
        """
        self._commit(commit)
        try:
            marker = self._marker()
            base = self._local_for(marker)
            if marker is not None and base is None:
                return _non_fast_forward(marker, commit)
            if marker is None and not self._origin_empty():
                base = self._surveyed(None)
            if base is not None and not self.holds_ancestor(commit, base):
                return _non_fast_forward(base, commit)
            paths = self.changed_paths(base, commit)
            deleted: list[str] = []
            signatures = self._backend.put_many(self._uploads(commit, paths, deleted))
            self._backend.delete_many(deleted)
            self._backend.flush()
            self._backend.put_marker(f"{commit}\n".encode())
        except RemoteUnavailable as exc:
            return PushReport("error", exc.message, classify_error(exc.message))
        self._after_push(base, commit, signatures, deleted)
        message = f"uploaded {len(signatures)} file(s), deleted {len(deleted)}"
        if self._invalidate_url is not None and paths:
            failure = self._invalidate(paths)
            if failure is None:
                message += f"; invalidation of {len(paths)} path(s) requested"
            else:
                message += f"; invalidation failed: {failure}"
        return PushReport("ok", message)

    def read_back(self, commit: str, expected: Mapping[str, bytes | None]) -> ReadBack:
        """Read the marker from the origin, and ``expected`` and ``config.json`` through the
        public URL on a new connection, as cargo reads them.

        ``expected`` maps paths to their content (None: must be absent, HTTP 404, 410 or 451).
        ``config.json`` must be the commit's own, when the commit holds one. ``remote_head`` is
        the local commit the marker stands for, or the marker itself when this side cannot place
        it. Every path that is not as expected is in ``mismatched``, with a line in ``problems``
        saying what was served instead.
        """
        marker = self._marker()
        local = self._local_for(marker)
        contains = local is not None and self.holds_ancestor(local, commit)
        wanted = dict(expected)
        if "config.json" not in wanted and self.has_commit(commit):
            config = self.read_blob(commit, "config.json")
            if config is not None:
                wanted["config.json"] = config
        problems = self._read_through_public_url(wanted)
        if problems and self._invalidate_url is not None and local is not None and contains:
            # The origin holds the change and the edge does not serve it: ask again, so that an
            # invalidation lost or ignored is retried with the job, not only when a file changes.
            failure = self._invalidate(list(problems))
            log_step("invalidation_retried", paths=len(problems), failure=failure)
        return ReadBack(
            remote_head=local if local is not None else marker,
            contains_commit=contains,
            mismatched=tuple(problems),
            method=METHOD,
            problems=tuple(f"{path}: {text}" for path, text in problems.items()),
        )

    # -- inside -----------------------------------------------------------------------------------

    def _read_through_public_url(self, wanted: Mapping[str, bytes | None]) -> dict[str, str]:
        """What is wrong with each path the public URL does not serve as wanted, by path.

        A few files are read on one connection; many (a pass that confirmed thousands of jobs)
        on ``READ_BACK_CONNECTIONS`` new connections at once, each reading its share in order,
        as a CDN serves many clients: one GET after the other read 1,600 files a second.
        """
        paths = sorted(wanted)
        count = 1 if len(paths) < READ_BACK_SHARED_FROM else READ_BACK_CONNECTIONS
        shares = [paths[n::count] for n in range(count)]

        def read(share: list[str]) -> dict[str, str]:
            found: dict[str, str] = {}
            with self._public.session() as session:
                for path in share:
                    problem = judging.problem(path, session.get(path), wanted[path])
                    if problem is not None:
                        found[path] = problem
            return found

        if count == 1:
            return read(paths)
        problems: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=count, thread_name_prefix="sparse-read-back") as pool:
            for found in pool.map(read, shares):
                problems.update(found)
        return dict(sorted(problems.items()))

    def _invalidate(self, paths: list[str]) -> str | None:
        """Tell the CDN these files changed; None when it said yes, else what went wrong.

        Up to ``INVALIDATION_PATHS`` paths are named one by one; more (a whole index written at
        once) as one wildcard over the index (``/index/*``), as CDNs limit the paths of one
        invalidation (CloudFront: 3,000) and count a wildcard as one.
        """
        assert self._invalidate_url is not None
        if len(paths) > INVALIDATION_PATHS:
            named = [self._public.path_of("") + "*"]
        else:
            named = [self._public.path_of(path) for path in paths]
        return self._public.post_json(self._invalidate_url, {"paths": named})

    def _uploads(self, commit: str, paths: list[str], deleted: list[str]) -> Iterator[tuple[str, bytes]]:
        """``(path, content)`` of each path that ``commit`` holds; the others go to ``deleted``.

        Many paths (a whole index written at once) are read in one walk of the commit, in the
        order its packs read fastest, instead of looking each path up in the tree: 139k
        lookups took 37 s of a 61 s upload.
        """
        if len(paths) <= BULK_UPLOAD_PATHS:
            for path in paths:
                data = self.read_blob(commit, path)
                if data is None:
                    deleted.append(path)
                else:
                    yield path, data
            return
        wanted = set(paths)
        for path, data in self.files_unordered(commit):
            if path in wanted:
                wanted.discard(path)
                yield path, data
        deleted.extend(sorted(wanted))


def _non_fast_forward(head: str, commit: str) -> PushReport:
    return PushReport(
        "rejected",
        f"non-fast-forward: the sparse index's head is {strip_credentials(head)[:12]}, "
        f"not an ancestor of {commit[:12]}",
    )
