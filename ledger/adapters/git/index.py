"""The git edge of the ledger: the cargo index as commits in a bare local clone.

A :class:`GitIndex` writes commits into a bare local clone (never a work tree),
pushes them to one branch of a remote, and proves a push by reading the remote
back on a new connection. What the pusher says (:class:`PushReport`) is recorded
but never trusted: a server may reject a ref without saying so, send no status at
all, or accept a ref that a hook rolls back later. Only :class:`ReadBack`, built
from the remote's advertised head and the blobs under it, confirms a push.

Every network operation uses a fresh anonymous remote, so each one is a new
connection, and every message that names the remote has its credentials removed.
Network failures on reads become :class:`~ledger.domain.errors.RemoteUnavailable`.

A ``GitIndex`` holds one ``pygit2.Repository`` and is not thread-safe: use one
per thread. The libgit2 network timeouts and object cache limits it sets are process-global.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import selectors
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, Self, TypeAlias

import pygit2
from pygit2.enums import ObjectType, Option, RepositoryOpenFlag

from ledger.domain.errors import InfrastructureError, RemoteUnavailable
from ledger.domain.names import crate_from_path
from ledger.settings import PushClient

__all__ = [
    "PENDING_REF",
    "READBACK_REF",
    "ErrorKind",
    "GitIndex",
    "PushReport",
    "PushStatus",
    "ReadBack",
    "classify_error",
    "strip_credentials",
]

PushStatus = Literal["ok", "rejected", "error", "no_status"]
ErrorKind = Literal["timeout", "unreachable", "other"]

PENDING_REF = "refs/ledger/pending"
"""Points at the newest commit written locally, keeping it reachable until it is pushed."""

READBACK_REF = "refs/ledger/readback"
"""Points at the remote head fetched by the latest :meth:`GitIndex.read_back`."""

_COMMIT_ID = re.compile(r"[0-9a-f]{40}")
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s]*@")
_UNREACHABLE_MARKERS = (
    "connection refused",
    "failed to connect",
    "could not resolve",
    "failed to resolve",
    "name or service not known",
    "temporary failure in name resolution",
    "no route to host",
    "network is unreachable",
    "host is unreachable",
)
# libgit2 refuses a non-fast-forward update itself, before anything is sent, for
# every transport; the server never gets to say so per ref.
_NON_FAST_FORWARD_MARKERS = (
    "cannot push non-fastforwardable reference",
    "contains commits that are not present locally",
)
_NETWORK_ERRORS = (pygit2.GitError, OSError)

# Pack files written by ``build_commit``: object type numbers and the tree modes.
_OBJ_TREE = 2
_OBJ_BLOB = 3
_OBJ_NAMES = {_OBJ_TREE: b"tree", _OBJ_BLOB: b"blob"}
_MODE_TREE = b"40000"
_MODE_BLOB = b"100644"
_PACK_FLUSH_BYTES = 1 << 20

PACK_OBJECTS_AT = 256
"""A commit with at least this many new objects is written as one pack, not as loose objects:
on an index of 139k files a 1,000-file commit writes about 2,500 objects, and under concurrent
disk writes each loose object (a file of its own) took up to about 1 ms."""

MAX_PACKS = 32
"""Packs the clone may hold before its small packs are merged (see ``GitIndex._repack``)."""

_CLI_SCHEMES = ("git://", "http://", "https://")
"""Remotes whose server side (receive-pack, hooks) is the same whichever client pushes."""
_CLI_OUTPUT_KEPT = 1 << 16

_TREE_CACHE_LIMIT = 1 << 20
"""The largest tree libgit2 keeps in its object cache. Its default (4 KiB) leaves out the index's
directory trees of more than ~100 entries, which every push reads and inflates again while it
marks the remote head's whole tree as already present: about a third of the CPU time a push
spends in this process on an index of 139k files, whose trees take about 9 MiB of the cache."""

_CACHE_MAX_SIZE = 64 << 20
"""libgit2's object cache bound (its default is 256 MiB). Trees of earlier commits stay cached until
the bound is reached, about 30 KiB a push, so a long-running worker would otherwise grow by the
whole default; 64 MiB still holds every tree of a 139k-file index several times over."""

_Node: TypeAlias = "dict[str, _Node | bytes]"
"""A directory being built: name -> subdirectory, or the binary id of a file's blob."""

_Change: TypeAlias = "dict[str, _Change | bytes | None]"
"""Changes below one directory: name -> nested changes, new bytes, or None (delete)."""


def strip_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` part removed from every URL in it."""
    return _USERINFO.sub(r"\g<scheme>", text)


def classify_error(message: str) -> ErrorKind:
    """Which kind of failure libgit2's error text describes."""
    text = message.lower()
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if any(marker in text for marker in _UNREACHABLE_MARKERS):
        return "unreachable"
    return "other"


@dataclass(frozen=True)
class PushReport:
    """What the pusher said about one push; recorded, never trusted."""

    status: PushStatus
    message: str | None
    """The server's rejection text (or libgit2's own refusal), or the error text."""
    error_kind: ErrorKind | None = None
    """For status ``"error"``: what the error text describes."""


@dataclass(frozen=True)
class ReadBack:
    """Evidence about a pushed commit, read from the remote on a new connection."""

    remote_head: str | None
    contains_commit: bool
    """The pushed commit is the remote head or one of its ancestors."""
    mismatched: tuple[str, ...]
    """Paths whose blob at the remote head differs from what was expected."""
    method: str

    @property
    def confirmed(self) -> bool:
        """The remote holds the commit and every expected blob."""
        return self.contains_commit and not self.mismatched


class _PushCallbacks(pygit2.RemoteCallbacks):
    """Records every per-reference status the server sends during a push."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[tuple[str, str | None]] = []

    def push_update_reference(self, refname: str, message: str | None) -> None:
        self.statuses.append((refname, message))


class GitIndex:
    """A bare local clone of the index and the one remote branch it is pushed to."""

    def __init__(
        self,
        repo: pygit2.Repository,
        remote_url: str,
        *,
        branch: str,
        author: tuple[str, str],
        timeout_ms: int = 15000,
        push_with: PushClient = "auto",
    ) -> None:
        if push_with not in ("auto", "git", "libgit2"):
            raise ValueError(f"push_with must be auto, git or libgit2, not {push_with!r}")
        self._push_with = push_with
        self._repo = repo
        self._url = remote_url
        self._branch = branch
        self._branch_ref = _branch_ref(branch)
        self._tracking_ref = f"refs/remotes/origin/{branch}"
        self._author = author
        self._timeout_s = timeout_ms / 1000

    @classmethod
    def open(
        cls,
        path: Path,
        remote_url: str,
        *,
        branch: str = "master",
        connect_timeout_ms: int = 5000,
        timeout_ms: int = 15000,
        author: tuple[str, str] = ("ledger", "ledger@localhost"),
        push_with: PushClient = "auto",
    ) -> GitIndex:
        """Open the bare clone at ``path``, creating it when missing, and set the timeouts."""
        _branch_ref(branch)
        if connect_timeout_ms <= 0 or timeout_ms <= 0:
            raise ValueError("network timeouts must be positive")
        pygit2.option(Option.SET_SERVER_CONNECT_TIMEOUT, connect_timeout_ms)
        pygit2.option(Option.SET_SERVER_TIMEOUT, timeout_ms)
        pygit2.option(Option.SET_CACHE_OBJECT_LIMIT, ObjectType.TREE, _TREE_CACHE_LIMIT)
        pygit2.option(Option.SET_CACHE_MAX_SIZE, _CACHE_MAX_SIZE)
        path = Path(path)
        try:
            if not path.exists() or (path.is_dir() and not any(path.iterdir())):
                repo = pygit2.init_repository(path, bare=True)
            else:
                repo = pygit2.Repository(path, RepositoryOpenFlag.NO_SEARCH)
        except (pygit2.GitError, OSError) as exc:
            raise InfrastructureError(
                f"cannot open the index clone at {path}: {exc}", path=str(path)
            ) from exc
        if not repo.is_bare:
            repo.free()
            raise InfrastructureError(f"the index clone at {path} is not a bare repository", path=str(path))
        return cls(repo, remote_url, branch=branch, author=author, timeout_ms=timeout_ms, push_with=push_with)

    @property
    def path(self) -> Path:
        """The bare local clone."""
        return Path(self._repo.path)

    @property
    def remote_url(self) -> str:
        """The remote's URL with any credentials removed."""
        return strip_credentials(self._url)

    @property
    def branch(self) -> str:
        """The remote branch the index is pushed to."""
        return self._branch

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
        """Release the repository; the instance cannot be used afterwards."""
        self._repo.free()

    # -- remote -----------------------------------------------------------------

    def remote_head(self) -> str | None:
        """The branch's commit as the remote advertises it now, None if it has no such branch."""
        remote = self._new_remote()
        try:
            heads = remote.list_heads()
        except _NETWORK_ERRORS as exc:
            raise self._unavailable("list the heads of", exc) from exc
        return self._advertised_head(heads)

    def fetch(self) -> str | None:
        """Fetch the branch into ``refs/remotes/origin/<branch>``; its commit, None if absent."""
        return self._fetch_into(self._tracking_ref)

    def push(self, commit: str) -> PushReport:
        """Push ``commit`` to the branch (never forced) and report what the pusher said.

        ``"rejected"`` covers a per-ref rejection from the server and libgit2's own refusal
        of a non-fast-forward, which it makes before sending anything, for every transport.
        ``"error"`` means the outcome is unknown: the pack may have been sent. Only
        :meth:`read_back` tells what the remote holds.

        Who pushes is :data:`PushClient`; git's per-ref report is read into the same statuses.
        """
        self._commit(commit)
        git = self._git_for_push()
        if git is not None:
            return self._cli_push(git, commit)
        callbacks = _PushCallbacks()
        remote = self._new_remote()
        try:
            remote.push([f"{commit}:{self._branch_ref}"], callbacks=callbacks)
        except _NETWORK_ERRORS as exc:
            text = strip_credentials(str(exc))
            if any(marker in text for marker in _NON_FAST_FORWARD_MARKERS):
                return PushReport("rejected", text)
            return PushReport("error", text, classify_error(text))
        mine = [message for refname, message in callbacks.statuses if refname == self._branch_ref]
        if not mine:
            return PushReport("no_status", None)
        rejections = [message for message in mine if message is not None]
        if rejections:
            return PushReport("rejected", strip_credentials("; ".join(rejections)))
        return PushReport("ok", None)

    def _git_for_push(self) -> str | None:
        """The git executable to push with, or None for libgit2.

        ``auto`` pushes with git to a git:// or http(s):// remote when git is installed, and
        with libgit2 otherwise (local paths, no git). Measured against a git:// server holding
        the 139k-file index: libgit2's pack builder marks every object of the remote head's
        tree as present before it sends anything (about 30 ms of a one-file push) and packs a
        whole index recompressed on one thread (a first push: 36 s of packing, 63 s in all,
        against 5 s with git), where git walks only the paths that changed and sends packed
        objects as they are. Both meet the same server: tests/test_worker_faults.py plays
        every fault mode through git, whose per-ref report reads into the same statuses.
        """
        if self._push_with == "libgit2":
            return None
        if self._push_with == "auto" and not self._url.startswith(_CLI_SCHEMES):
            return None
        return shutil.which("git")

    def _cli_push(self, git: str, commit: str) -> PushReport:
        """``git push`` of ``commit`` from the bare clone, read into a :class:`PushReport`.

        The remote's URL reaches git through the environment (never the command line, where
        other users could read its credentials), with no user or system configuration and no
        prompts. Like libgit2's server timeout, a push that hears nothing (no progress, no
        answer) for the timeout is stopped and reported as a timeout.
        """
        env = self._git_env()
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="remote.ledger-push.url",
            GIT_CONFIG_VALUE_0=self._url,
        )
        argv = [git, "push", "--porcelain", "--progress", "--no-verify", "ledger-push"]
        argv.append(f"{commit}:{self._branch_ref}")
        try:
            code, out, err = _run_with_silence_limit(argv, env, self._timeout_s)
        except OSError as exc:
            text = strip_credentials(str(exc))
            return PushReport("error", text, classify_error(text))
        if code is None:
            text = f"git push to {self.remote_url}: timed out after {self._timeout_s:g} s without an answer"
            return PushReport("error", text, "timeout")
        return _cli_report(code, out, err, self._branch_ref)

    def read_back(self, commit: str, expected: Mapping[str, bytes | None]) -> ReadBack:
        """Read the remote on a new connection: does its head hold ``commit`` and ``expected``?

        ``expected`` maps paths to their content at the remote head; None means absent.
        """
        head = self._fetch_into(READBACK_REF)
        if head is None:
            contains = False
            mismatched = tuple(sorted(path for path, data in expected.items() if data is not None))
        else:
            contains = head == commit or (
                _COMMIT_ID.fullmatch(commit) is not None
                and commit in self._repo
                and self._repo.descendant_of(head, commit)
            )
            tree = self._commit(head).tree
            mismatched = tuple(path for path in sorted(expected) if not _holds(tree, path, expected[path]))
        return ReadBack(
            remote_head=head,
            contains_commit=contains,
            mismatched=mismatched,
            method=f"ls-remote+fetch: head, ancestry, {len(expected)} blobs",
        )

    def _new_remote(self) -> pygit2.Remote:
        return self._repo.remotes.create_anonymous(self._url)

    def _unavailable(self, action: str, exc: BaseException) -> RemoteUnavailable:
        url = self.remote_url
        return RemoteUnavailable(f"cannot {action} {url}: {strip_credentials(str(exc))}", remote=url)

    def _advertised_head(self, heads: Iterable[pygit2.remotes.RemoteHead]) -> str | None:
        for head in heads:
            if head.name == self._branch_ref:
                return str(head.oid)
        return None

    def _fetch_into(self, local_ref: str) -> str | None:
        """Fetch the branch into ``local_ref`` over one new connection; the advertised head."""
        remote = self._new_remote()
        try:
            remote.fetch([f"+{self._branch_ref}:{local_ref}"])
            # The advertisement of the connection the fetch just used.
            head = self._advertised_head(remote.list_heads(connect=False))
        except _NETWORK_ERRORS as exc:
            raise self._unavailable("fetch from", exc) from exc
        if head is None:
            if local_ref in self._repo.references:
                self._repo.references.delete(local_ref)
            return None
        if head not in self._repo:
            raise RemoteUnavailable(
                f"{self.remote_url} advertised {self._branch} at {head} but did not send it",
                remote=self.remote_url,
            )
        self._repo.references.create(local_ref, head, force=True)
        return head

    # -- local objects ------------------------------------------------------------

    def has_commit(self, commit: str) -> bool:
        """Whether the clone holds the commit ``commit``."""
        return _COMMIT_ID.fullmatch(commit) is not None and commit in self._repo

    def holds_ancestor(self, head: str, commit: str) -> bool:
        """Whether ``commit`` is ``head`` or one of its ancestors (in the clone)."""
        return self.has_commit(commit) and (head == commit or self._repo.descendant_of(head, commit))

    def entry_kind(self, commit: str | None, path: str) -> str | None:
        """What ``path`` is in ``commit``: ``file``, ``symlink``, ``directory``, ``submodule``, or None."""
        entry = self._entry(commit, path)
        return None if entry is None else _kind(entry.filemode)

    def read_file(self, commit: str | None, path: str) -> tuple[str | None, bytes | None]:
        """What ``path`` is in ``commit`` (see :meth:`entry_kind`) and, for a regular file, its
        content: one lookup for a writer that must know both."""
        entry = self._entry(commit, path)
        if entry is None:
            return None, None
        kind = _kind(entry.filemode)
        return kind, entry.data if kind == "file" and isinstance(entry, pygit2.Blob) else None

    def _entry(self, commit: str | None, path: str) -> pygit2.Object | None:
        """The tree entry at ``path`` in ``commit``; None when commit is None or it is absent."""
        if commit is None:
            return None
        try:
            return self._commit(commit).tree[path]
        except KeyError:
            return None

    def tree_files(self, commit: str) -> tuple[list[str], dict[str, str]]:
        """In one walk of ``commit``: the sorted paths of its files (blobs), and the entries that
        are not regular files where a crate file or ``config.json`` would be (path -> what it
        is: a symbolic link and its target, a directory, a submodule)."""
        files: list[str] = []
        odd: dict[str, str] = {}
        self._walk_files(self._commit(commit).tree, "", files, odd)
        return sorted(files), odd

    def _walk_files(self, tree: pygit2.Tree, prefix: str, files: list[str], found: dict[str, str]) -> None:
        for entry in tree:
            path = f"{prefix}{entry.name}"
            kind = _kind(entry.filemode)
            if kind == "file":
                files.append(path)
                continue
            index_file = path == "config.json" or crate_from_path(path) is not None
            if kind == "directory":
                if index_file:
                    found[path] = "a directory, not a file"
                assert isinstance(entry, pygit2.Tree)
                self._walk_files(entry, f"{path}/", files, found)
            elif kind == "symlink" and index_file:
                target = self._repo[entry.id].peel(pygit2.Blob).data[:200].decode("utf-8", "replace")
                found[path] = f"a symbolic link (to {target!r}), which the ledger never follows"
            elif kind == "symlink":
                files.append(path)  # a blob elsewhere in the tree: counted with the other files
            elif kind == "submodule" and index_file:
                found[path] = "a submodule, not a file"

    def read_blob(self, commit: str | None, path: str) -> bytes | None:
        """The content of ``path`` in ``commit``; None when commit is None or the path is absent."""
        _split_path(path)
        entry = self._entry(commit, path)
        return entry.data if isinstance(entry, pygit2.Blob) else None

    def commit(
        self,
        parent: str | None,
        changes: Mapping[str, bytes | None],
        message: str,
        *,
        when: datetime | None = None,
    ) -> str | None:
        """A new commit on ``parent`` with ``changes`` applied; None if the tree is unchanged.

        Each path is set to its bytes, or deleted when they are None; directories left
        empty disappear. Only the trees along the changed paths are rewritten. No branch
        moves: ``refs/ledger/pending`` is set to the new commit to keep it reachable.

        The new blobs and trees are serialised here and written as loose objects, or as one
        pack when there are many (see :data:`PACK_OBJECTS_AT`).
        """
        base = self._commit(parent).tree if parent is not None else None
        root: _Change = {}
        for path, data in changes.items():
            node = root
            *dirs, name = _split_path(path)
            for part in dirs:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"{path!r} lies below the changed file {part!r}")
                node = child
            if isinstance(node.get(name), dict):
                raise ValueError(f"{path!r} is changed both as a file and as a directory")
            node[name] = data
        objects: dict[bytes, tuple[int, bytes]] = {}
        base_id = base.id.raw if base is not None else None
        tree_id = self._apply(base_id, root, objects)
        if tree_id is None:
            if base is None or len(base) == 0:
                return None
            tree_id = _add_object(objects, _OBJ_TREE, b"")
        elif tree_id == base_id:
            return None
        self._store(objects)
        return self._write_commit(pygit2.Oid(raw=tree_id), message, [] if parent is None else [parent], when)

    def _apply(
        self, tree_id: bytes | None, changes: _Change, objects: dict[bytes, tuple[int, bytes]]
    ) -> bytes | None:
        """The id of tree ``tree_id`` with ``changes`` applied, its new objects added to
        ``objects``; None when the result is empty."""
        entries = _tree_entries(self._repo.odb.read(pygit2.Oid(raw=tree_id))[1]) if tree_id else {}
        for name, change in changes.items():
            key = name.encode()
            existing = entries.get(key)
            if isinstance(change, dict):
                subtree = existing[1] if existing is not None and existing[0] == _MODE_TREE else None
                new_id = self._apply(subtree, change, objects)
                if new_id is not None:
                    entries[key] = (_MODE_TREE, new_id)
                elif subtree is not None:
                    del entries[key]
            elif change is not None:
                entries[key] = (_MODE_BLOB, _add_object(objects, _OBJ_BLOB, change))
            elif existing is not None:
                del entries[key]
        if not entries:
            return None
        raw = _tree_bytes(entries)
        new_id = _object_id(_OBJ_TREE, raw)
        if new_id != tree_id:
            objects[new_id] = (_OBJ_TREE, raw)
        return new_id

    def _store(self, objects: Mapping[bytes, tuple[int, bytes]]) -> None:
        """Write ``objects`` into the clone: loose when few, else one pack."""
        if len(objects) < PACK_OBJECTS_AT:
            odb = self._repo.odb
            for kind, raw in objects.values():
                odb.write(kind, raw)
            return
        pack_dir = Path(self._repo.path) / "objects" / "pack"
        _write_pack(pack_dir, objects)
        if len(list(pack_dir.glob("pack-*.idx"))) > MAX_PACKS:
            self._repack()

    def _repack(self) -> None:
        """Merge the clone's small packs (``git repack --geometric``), when git is installed.

        Each large commit adds a pack; libgit2 looks objects up pack by pack, so they are
        merged once there are more than :data:`MAX_PACKS`. No new deltas are searched (the
        objects are copied as they are stored): 33 packs of 3,000-file commits merged with the
        139k-file index's pack in 1.0 s that way, 3.2 s with git's default delta search, and a
        worker's clone with a fetched, deltified base spent 36 s.
        """
        git = shutil.which("git")
        if git is None:
            return
        argv = [git, "-c", "pack.window=0", "repack", "--geometric=2", "-d", "-q", "--no-write-bitmap-index"]
        # Upkeep only: the commit is written either way, and a merge that fails is tried again
        # after the next large commit.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                argv,
                env=self._git_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=600,
            )

    def _git_env(self) -> dict[str, str]:
        """The environment of a git command on the clone: no user or system configuration."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_DIR=str(self.path), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
        return env

    def _write_commit(
        self,
        tree_id: pygit2.Oid,
        message: str,
        parents: list[str],
        when: datetime | None,
    ) -> str:
        moment = datetime.now(UTC) if when is None else when
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        name, email = self._author
        signature = pygit2.Signature(name, email, int(moment.timestamp()), 0)
        oid = self._repo.create_commit(None, signature, signature, message, tree_id, parents)
        self._repo.references.create(PENDING_REF, oid, force=True)
        return str(oid)

    def files(self, commit: str) -> Iterator[tuple[str, bytes]]:
        """Every file in ``commit`` as (path, content), directory by directory."""
        for path, blob in _walk(self._commit(commit).tree, ""):
            yield path, blob.data

    def files_unordered(self, commit: str) -> Iterator[tuple[str, bytes]]:
        """Every file in ``commit`` as (path, content), in the order that reads packs fastest.

        Blobs are read grouped by file name, the way git's pack writers group them into delta
        chains, so each chain's bases stay in libgit2's delta base cache: on a packed index of
        139k files this is about three times faster than reading directory by directory.
        """
        entries = [(path, blob.id) for path, blob in _walk(self._commit(commit).tree, "")]
        entries.sort(key=lambda entry: _name_hash(entry[0].rpartition("/")[2]))
        for path, oid in entries:
            blob = self._repo[oid]
            assert isinstance(blob, pygit2.Blob)
            yield path, blob.data

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        """Sorted paths whose blob differs between ``old`` and ``new`` (old None: all of new)."""
        new_tree = self._commit(new).tree
        if old is None:
            return sorted(path for path, _ in _walk(new_tree, ""))
        diff = self._commit(old).tree.diff_to_tree(new_tree)
        paths: set[str] = set()
        for delta in diff.deltas:
            if delta.old_file.id != delta.new_file.id:
                paths.add(delta.old_file.path)
                paths.add(delta.new_file.path)
        return sorted(paths)

    def build_commit(
        self,
        files: Iterable[tuple[str, bytes]],
        message: str,
        *,
        parent: str | None = None,
    ) -> str:
        """A commit whose tree holds exactly ``files``; sets ``refs/ledger/pending`` to it.

        The tree does not start from any earlier tree; ``parent`` only records history.
        A path given twice keeps its last content. All blobs and trees go into one
        pack written directly, which is much faster than loose objects or
        ``git fast-import`` for a whole index.
        """
        parents = [] if parent is None else [str(self._commit(parent).id)]
        objects: dict[bytes, tuple[int, bytes]] = {}
        root: _Node = {}
        for path, data in files:
            node = root
            *dirs, name = _split_path(path)
            for part in dirs:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"{path!r} lies below the file {part!r}")
                node = child
            if isinstance(node.get(name), dict):
                raise ValueError(f"{path!r} is both a file and a directory")
            node[name] = _add_object(objects, _OBJ_BLOB, data)
        tree_id = _add_tree(objects, root)
        _write_pack(Path(self._repo.path) / "objects" / "pack", objects)
        return self._write_commit(pygit2.Oid(raw=tree_id), message, parents, None)

    def _commit(self, commit_id: str) -> pygit2.Commit:
        if _COMMIT_ID.fullmatch(commit_id) is None:
            raise ValueError(f"{commit_id!r} is not a full commit id")
        obj = self._repo.get(commit_id)
        if not isinstance(obj, pygit2.Commit):
            raise ValueError(f"{commit_id} is not a commit in the index clone")
        return obj


def _run_with_silence_limit(
    argv: list[str], env: dict[str, str], silence_s: float
) -> tuple[int | None, str, str]:
    """Run ``argv``; its exit code (None: killed after ``silence_s`` without output), stdout, stderr.

    Only the last 64 KiB of each stream are kept (progress output is long). The process runs
    in a session of its own, so a kill reaches the helpers it started too.
    """
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    kept = {out_fd: bytearray(), err_fd: bytearray()}
    with selectors.DefaultSelector() as selector:
        for stream in (proc.stdout, proc.stderr):
            selector.register(stream, selectors.EVENT_READ)
        heard = time.monotonic()
        while selector.get_map():
            quiet = time.monotonic() - heard
            ready = selector.select(timeout=max(0.01, min(1.0, silence_s - quiet)))
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = kept[key.fd]
                buffer += chunk
                del buffer[:-_CLI_OUTPUT_KEPT]
                heard = time.monotonic()
            if not ready and time.monotonic() - heard > silence_s:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                proc.stdout.close()
                proc.stderr.close()
                return None, "", ""
    code = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return code, kept[out_fd].decode("utf-8", "replace"), kept[err_fd].decode("utf-8", "replace")


def _cli_report(code: int, out: str, err: str, ref: str) -> PushReport:
    """What ``git push --porcelain`` said about ``ref``, in libgit2's terms.

    A line ``<flag>\t<from>:<ref>\t<summary>`` per ref: ``!`` with ``[remote rejected]
    (reason)`` is the server's rejection; ``[remote failure]`` means the server sent no
    status for the ref (libgit2 then calls no callback: no status); any other ``!`` is
    git's own refusal (non-fast-forward). No line at all is an error (connection, transport).
    A pack the server could not unpack is an error, as libgit2 raises for it.
    """
    err_text = strip_credentials(err.replace("\r", "\n"))
    if "remote unpack failed" in err_text:
        text = _last_lines(err_text)
        return PushReport("error", text, classify_error(text))
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[1].endswith(f":{ref}"):
            continue
        flag, summary = parts[0], parts[2]
        if flag != "!":
            return PushReport("ok", None)
        reason = summary.partition("(")[2].rpartition(")")[0] or summary
        if summary.startswith("[remote failure]"):
            return PushReport("no_status", None)
        return PushReport("rejected", strip_credentials(reason))
    if code == 0:
        return PushReport("no_status", None)
    text = _last_lines(err_text) or f"git push exited with code {code}"
    return PushReport("error", text, classify_error(text))


def _last_lines(text: str, count: int = 5) -> str:
    """The last few non-empty lines of git's messages, without progress counters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not re.search(r"\d+% \(\d+/\d+\)", line)]
    return "; ".join(lines[-count:])


def _branch_ref(branch: str) -> str:
    ref = f"refs/heads/{branch}"
    if not pygit2.reference_is_valid_name(ref):
        raise ValueError(f"invalid branch name {branch!r}")
    return ref


def _walk(tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, pygit2.Blob]]:
    """Every blob below ``tree`` with its path; blob contents are read only when used."""
    for entry in tree:
        path = f"{prefix}{entry.name}"
        if isinstance(entry, pygit2.Tree):
            yield from _walk(entry, f"{path}/")
        elif isinstance(entry, pygit2.Blob):
            yield path, entry


def _kind(filemode: int) -> str:
    if filemode == pygit2.enums.FileMode.TREE:
        return "directory"
    if filemode == pygit2.enums.FileMode.LINK:
        return "symlink"
    if filemode == pygit2.enums.FileMode.COMMIT:
        return "submodule"
    return "file"


def _name_hash(name: str) -> int:
    """The sort key git and libgit2 give a file name when choosing delta bases for a pack."""
    value = 0
    for char in name.encode():
        if char not in b" \t\n\v\f\r":
            value = ((value >> 2) + (char << 24)) & 0xFFFFFFFF
    return value


def _holds(tree: pygit2.Tree, path: str, data: bytes | None) -> bool:
    """Whether ``tree`` has ``data`` as the blob at ``path`` (None: no blob there).

    Compares object ids, content-addressed, so the blob itself is never read or inflated.
    """
    _split_path(path)
    try:
        entry = tree[path]
    except KeyError:
        return data is None
    if not isinstance(entry, pygit2.Blob):
        return data is None
    return data is not None and entry.id == pygit2.hash(data)


def _split_path(path: str) -> list[str]:
    """The components of a file path inside the index; ValueError if git could not store it."""
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", "..") or "\0" in part or part.lower() == ".git":
            raise ValueError(f"invalid index path {path!r}")
    return parts


def _object_id(kind: int, raw: bytes) -> bytes:
    """The binary id git gives an object of this kind and content."""
    digest = hashlib.sha1(b"%s %d\0" % (_OBJ_NAMES[kind], len(raw)), usedforsecurity=False)
    digest.update(raw)
    return digest.digest()


def _add_object(objects: dict[bytes, tuple[int, bytes]], kind: int, raw: bytes) -> bytes:
    """Record an object to be written and return its binary id."""
    oid = _object_id(kind, raw)
    objects[oid] = (kind, raw)
    return oid


def _tree_entries(raw: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    """A tree object's entries: name -> (mode, binary id), from its raw bytes."""
    entries: dict[bytes, tuple[bytes, bytes]] = {}
    at, end = 0, len(raw)
    while at < end:
        space = raw.index(b" ", at)
        nul = raw.index(b"\0", space)
        entries[raw[space + 1 : nul]] = (raw[at:space], raw[nul + 1 : nul + 21])
        at = nul + 21
    return entries


def _tree_bytes(entries: Mapping[bytes, tuple[bytes, bytes]]) -> bytes:
    """A tree object's raw bytes from its entries, in git's order (a directory sorts as name/)."""
    keyed = sorted((name + b"/" if mode == _MODE_TREE else name, name) for name, (mode, _) in entries.items())
    return b"".join(b"%s %s\0%s" % (entries[name][0], name, entries[name][1]) for _, name in keyed)


def _add_tree(objects: dict[bytes, tuple[int, bytes]], node: _Node) -> bytes:
    """Record the tree for ``node`` and its subtrees; the tree's binary id."""
    entries: list[tuple[bytes, bytes]] = []
    for name, value in node.items():
        encoded = name.encode()
        if isinstance(value, dict):
            # git orders a directory as if its name ended with "/".
            entries.append((encoded + b"/", b"%s %s\0%s" % (_MODE_TREE, encoded, _add_tree(objects, value))))
        else:
            entries.append((encoded, b"%s %s\0%s" % (_MODE_BLOB, encoded, value)))
    entries.sort()
    return _add_object(objects, _OBJ_TREE, b"".join(entry for _, entry in entries))


def _pack_object_header(kind: int, size: int) -> bytes:
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    header = bytearray()
    while size:
        header.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    header.append(byte)
    return bytes(header)


def _write_pack(pack_dir: Path, objects: Mapping[bytes, tuple[int, bytes]]) -> None:
    """Write ``objects`` as one pack with its version 2 index into ``pack_dir``."""
    checksum = hashlib.sha1(usedforsecurity=False)
    entries: list[tuple[bytes, int, int]] = []
    fd, pack_tmp = tempfile.mkstemp(prefix="tmp_pack_", dir=pack_dir)
    idx_tmp = ""
    try:
        with os.fdopen(fd, "wb") as out:
            buffer = bytearray(b"PACK" + struct.pack(">II", 2, len(objects)))
            offset = len(buffer)
            for oid, (kind, raw) in objects.items():
                record = _pack_object_header(kind, len(raw)) + zlib.compress(raw, 1)
                entries.append((oid, zlib.crc32(record), offset))
                offset += len(record)
                buffer += record
                if len(buffer) >= _PACK_FLUSH_BYTES:
                    checksum.update(buffer)
                    out.write(buffer)
                    buffer.clear()
            checksum.update(buffer)
            out.write(buffer)
            pack_sum = checksum.digest()
            out.write(pack_sum)
            out.flush()
            os.fsync(out.fileno())

        index = _pack_index(entries, pack_sum)
        fd, idx_tmp = tempfile.mkstemp(prefix="tmp_idx_", dir=pack_dir)
        with os.fdopen(fd, "wb") as out:
            out.write(index)
            out.flush()
            os.fsync(out.fileno())

        # The index goes in last: git and libgit2 find packs through their index files.
        name = f"pack-{pack_sum.hex()}"
        os.chmod(pack_tmp, 0o444)
        os.chmod(idx_tmp, 0o444)
        os.replace(pack_tmp, pack_dir / f"{name}.pack")
        os.replace(idx_tmp, pack_dir / f"{name}.idx")
    finally:
        for leftover in (pack_tmp, idx_tmp):
            if leftover and os.path.exists(leftover):
                os.unlink(leftover)


def _pack_index(entries: list[tuple[bytes, int, int]], pack_sum: bytes) -> bytes:
    """The version 2 index of a pack from its (object id, crc32, offset) entries."""
    entries = sorted(entries)
    fanout = [0] * 256
    for oid, _, _ in entries:
        fanout[oid[0]] += 1
    total = 0
    index = bytearray(b"\xfftOc" + struct.pack(">I", 2))
    for count in fanout:
        total += count
        index += struct.pack(">I", total)
    index += b"".join(oid for oid, _, _ in entries)
    index += b"".join(struct.pack(">I", crc) for _, crc, _ in entries)
    large: list[int] = []
    for _, _, position in entries:
        if position < 0x80000000:
            index += struct.pack(">I", position)
        else:
            index += struct.pack(">I", 0x80000000 | len(large))
            large.append(position)
    index += b"".join(struct.pack(">Q", position) for position in large)
    index += pack_sum
    index += hashlib.sha1(index, usedforsecurity=False).digest()
    return bytes(index)
