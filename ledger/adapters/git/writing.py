"""Writing the bare local clone: a commit with changes applied on top of a head, or a whole
index as one commit, its objects written as loose objects or as one pack; small packs merged.

Nothing is pushed here and no branch moves: ``refs/ledger/pending`` keeps the newest commit
reachable until it is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pygit2
from pygit2.enums import RepositoryOpenFlag

from ledger.adapters.git.objects import (
    MODE_BLOB,
    MODE_TREE,
    OBJ_BLOB,
    OBJ_TREE,
    Change,
    Node,
    add_object,
    add_tree,
    object_id,
    split_path,
    tree_bytes,
    tree_entries,
    write_pack,
)
from ledger.adapters.git.reading import TreeReader
from ledger.domain.errors import InfrastructureError

PENDING_REF = "refs/ledger/pending"
"""Points at the newest commit written locally, keeping it reachable until it is pushed."""


PACK_OBJECTS_AT = 256
"""A commit with at least this many new objects is written as one pack, not as loose objects:
on an index of 139k files a 1,000-file commit writes about 2,500 objects, and under concurrent
disk writes each loose object (a file of its own) took up to about 1 ms."""


MAX_PACKS = 32
"""Packs the clone may hold before its small packs are merged (see ``GitIndex._repack``)."""


def open_bare(path: Path, what: str) -> pygit2.Repository:
    """The bare repository at ``path``, created when the folder is missing or empty; ``what``
    names it in errors (``the index clone``, ``the shadow repository``)."""
    path = Path(path)
    try:
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            repo = pygit2.init_repository(path, bare=True)
        else:
            repo = pygit2.Repository(path, RepositoryOpenFlag.NO_SEARCH)
    except (pygit2.GitError, OSError) as exc:
        raise InfrastructureError(f"cannot open {what} at {path}: {exc}", path=str(path)) from exc
    if not repo.is_bare:
        repo.free()
        raise InfrastructureError(f"{what} at {path} is not a bare repository", path=str(path))
    return repo


class CommitWriter(TreeReader):
    """The write side of a clone held in ``self._repo``, committing as ``self._author``."""

    _author: tuple[str, str]

    @property
    def path(self) -> Path:
        """The bare local clone."""
        return Path(self._repo.path)

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
        root: Change = {}
        for path, data in changes.items():
            node = root
            *dirs, name = split_path(path)
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
            tree_id = add_object(objects, OBJ_TREE, b"")
        elif tree_id == base_id:
            return None
        self._store(objects)
        return self._write_commit(pygit2.Oid(raw=tree_id), message, [] if parent is None else [parent], when)

    def _apply(
        self, tree_id: bytes | None, changes: Change, objects: dict[bytes, tuple[int, bytes]]
    ) -> bytes | None:
        """The id of tree ``tree_id`` with ``changes`` applied, its new objects added to
        ``objects``; None when the result is empty."""
        entries = tree_entries(self._repo.odb.read(pygit2.Oid(raw=tree_id))[1]) if tree_id else {}
        for name, change in changes.items():
            key = name.encode()
            existing = entries.get(key)
            if isinstance(change, dict):
                subtree = existing[1] if existing is not None and existing[0] == MODE_TREE else None
                new_id = self._apply(subtree, change, objects)
                if new_id is not None:
                    entries[key] = (MODE_TREE, new_id)
                elif subtree is not None:
                    del entries[key]
            elif change is not None:
                entries[key] = (MODE_BLOB, add_object(objects, OBJ_BLOB, change))
            elif existing is not None:
                del entries[key]
        if not entries:
            return None
        raw = tree_bytes(entries)
        new_id = object_id(OBJ_TREE, raw)
        if new_id != tree_id:
            objects[new_id] = (OBJ_TREE, raw)
        return new_id

    def _store(self, objects: Mapping[bytes, tuple[int, bytes]]) -> None:
        """Write ``objects`` into the clone: loose when few, else one pack."""
        if len(objects) < PACK_OBJECTS_AT:
            odb = self._repo.odb
            for kind, raw in objects.values():
                odb.write(kind, raw)
            return
        pack_dir = Path(self._repo.path) / "objects" / "pack"
        write_pack(pack_dir, objects)
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
        root: Node = {}
        for path, data in files:
            node = root
            *dirs, name = split_path(path)
            for part in dirs:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"{path!r} lies below the file {part!r}")
                node = child
            if isinstance(node.get(name), dict):
                raise ValueError(f"{path!r} is both a file and a directory")
            node[name] = add_object(objects, OBJ_BLOB, data)
        tree_id = add_tree(objects, root)
        write_pack(Path(self._repo.path) / "objects" / "pack", objects)
        return self._write_commit(pygit2.Oid(raw=tree_id), message, parents, None)
