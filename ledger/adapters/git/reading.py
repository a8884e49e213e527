"""Reading the bare local clone: commits, the entries and files of their trees, what changed.

Nothing here touches the network; the heads read are the ones the clone fetched or wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pygit2

from ledger.adapters.git.objects import name_hash, split_path
from ledger.domain.names import crate_from_path

COMMIT_ID = re.compile(r"[0-9a-f]{40}")


class TreeReader:
    """The read side of a clone held in ``self._repo``."""

    _repo: pygit2.Repository

    def has_commit(self, commit: str) -> bool:
        """Whether the clone holds the commit ``commit``."""
        return COMMIT_ID.fullmatch(commit) is not None and commit in self._repo

    def holds_ancestor(self, head: str, commit: str) -> bool:
        """Whether ``commit`` is ``head`` or one of its ancestors (in the clone)."""
        return self.has_commit(commit) and (head == commit or self._repo.descendant_of(head, commit))

    def entry_kind(self, commit: str | None, path: str) -> str | None:
        """What ``path`` is in ``commit``: ``file``, ``symlink``, ``directory``, ``submodule``, or None."""
        entry = self._entry(commit, path)
        return None if entry is None else kind_of(entry.filemode)

    def read_file(self, commit: str | None, path: str) -> tuple[str | None, bytes | None]:
        """What ``path`` is in ``commit`` (see :meth:`entry_kind`) and, for a regular file, its
        content: one lookup for a writer that must know both."""
        entry = self._entry(commit, path)
        if entry is None:
            return None, None
        kind = kind_of(entry.filemode)
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
            kind = kind_of(entry.filemode)
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
        split_path(path)
        entry = self._entry(commit, path)
        return entry.data if isinstance(entry, pygit2.Blob) else None

    def files(self, commit: str) -> Iterator[tuple[str, bytes]]:
        """Every file in ``commit`` as (path, content), directory by directory."""
        for path, blob in walk(self._commit(commit).tree, ""):
            yield path, blob.data

    def files_unordered(self, commit: str) -> Iterator[tuple[str, bytes]]:
        """Every file in ``commit`` as (path, content), in the order that reads packs fastest.

        Blobs are read grouped by file name, the way git's pack writers group them into delta
        chains, so each chain's bases stay in libgit2's delta base cache: on a packed index of
        139k files this is about three times faster than reading directory by directory.
        """
        entries = [(path, blob.id) for path, blob in walk(self._commit(commit).tree, "")]
        entries.sort(key=lambda entry: name_hash(entry[0].rpartition("/")[2]))
        for path, oid in entries:
            blob = self._repo[oid]
            assert isinstance(blob, pygit2.Blob)
            yield path, blob.data

    def changed_paths(self, old: str | None, new: str) -> list[str]:
        """Sorted paths whose blob differs between ``old`` and ``new`` (old None: all of new)."""
        new_tree = self._commit(new).tree
        if old is None:
            return sorted(path for path, _ in walk(new_tree, ""))
        paths: list[str] = []
        _differ(self._commit(old).tree, new_tree, "", paths)
        return sorted(paths)

    def _commit(self, commit_id: str) -> pygit2.Commit:
        if COMMIT_ID.fullmatch(commit_id) is None:
            raise ValueError(f"{commit_id!r} is not a full commit id")
        obj = self._repo.get(commit_id)
        if not isinstance(obj, pygit2.Commit):
            raise ValueError(f"{commit_id} is not a commit in the index clone")
        return obj


def walk(tree: pygit2.Tree, prefix: str) -> Iterator[tuple[str, pygit2.Blob]]:
    """Every blob below ``tree`` with its path; blob contents are read only when used."""
    for entry in tree:
        path = f"{prefix}{entry.name}"
        if isinstance(entry, pygit2.Tree):
            yield from walk(entry, f"{path}/")
        elif isinstance(entry, pygit2.Blob):
            yield path, entry


def _differ(old: pygit2.Tree, new: pygit2.Tree, prefix: str, paths: list[str]) -> None:
    """Add to ``paths`` every path below ``old`` and ``new`` whose entry differs, skipping each
    subtree whose id is the same on both sides: a push's one changed file in an index of 139k
    files compares the root's entries and two small trees, where libgit2's tree diff walked
    every entry (57 ms a push)."""
    before = {entry.name: entry for entry in old}
    after = {entry.name: entry for entry in new}
    for name in before.keys() | after.keys():
        was, now = before.get(name), after.get(name)
        if was is not None and now is not None and was.id == now.id:
            continue
        path = f"{prefix}{name}"
        if isinstance(was, pygit2.Tree) and isinstance(now, pygit2.Tree):
            _differ(was, now, f"{path}/", paths)
            continue
        for side in (was, now):
            if isinstance(side, pygit2.Tree):
                paths.extend(found for found, _ in walk(side, f"{path}/"))
            elif side is not None and path not in paths[-1:]:
                paths.append(path)


def kind_of(filemode: int) -> str:
    if filemode == pygit2.enums.FileMode.TREE:
        return "directory"
    if filemode == pygit2.enums.FileMode.LINK:
        return "symlink"
    if filemode == pygit2.enums.FileMode.COMMIT:
        return "submodule"
    return "file"


def holds(tree: pygit2.Tree, path: str, data: bytes | None) -> bool:
    """Whether ``tree`` has ``data`` as the blob at ``path`` (None: no blob there).

    Compares object ids, content-addressed, so the blob itself is never read or inflated.
    """
    split_path(path)
    try:
        entry = tree[path]
    except KeyError:
        return data is None
    if not isinstance(entry, pygit2.Blob):
        return data is None
    return data is not None and entry.id == pygit2.hash(data)
