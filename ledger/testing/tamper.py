"""Change a remote's branch behind the ledger's back, as a careless operator or a bad script would."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pygit2
from pygit2.enums import FileMode

Edit = Callable[[bytes | None], bytes | None]


def force_push(bare_path: Path, branch: str, edits: Mapping[str, Edit], message: str) -> str:
    """Commit each path edited (None deletes) on top of the branch, and force the branch to it."""
    repo = pygit2.Repository(str(bare_path))
    head = repo.revparse_single(f"refs/heads/{branch}").peel(pygit2.Commit)
    tree = head.tree
    for path, edit in edits.items():
        parts = path.split("/")
        old = _read(repo, tree, path)
        new = edit(old)
        tree = repo[_replace(repo, tree, parts, None if new is None else repo.create_blob(new))].peel(
            pygit2.Tree
        )
    sig = pygit2.Signature("someone", "someone@localhost", int(time.time()), 0)
    commit = repo.create_commit(None, sig, sig, message, tree.id, [head.id])
    repo.references.create(f"refs/heads/{branch}", commit, force=True)
    return str(commit)


def push_straight(
    bare_path: Path,
    files: Mapping[str, bytes | None],
    *,
    branch: str = "master",
    rewrite: bool = False,
    message: str = "outside the ledger",
) -> str:
    """Commit ``files`` (None deletes) straight into the branch, bypassing the ledger (a branch
    that does not exist yet starts with them).

    ``rewrite`` replaces the head instead of building on it, as a force push would.
    """
    repo = pygit2.Repository(str(bare_path))
    ref = f"refs/heads/{branch}"
    head = repo.revparse_single(ref).peel(pygit2.Commit) if ref in repo.references else None
    tree = head.tree if head is not None else repo[repo.TreeBuilder().write()].peel(pygit2.Tree)
    for path, data in files.items():
        blob = None if data is None else repo.create_blob(data)
        tree = repo[_replace(repo, tree, path.split("/"), blob)].peel(pygit2.Tree)
    sig = pygit2.Signature("someone", "someone@localhost", int(time.time()), 0)
    parents = [] if head is None else list(head.parent_ids) if rewrite else [head.id]
    commit = repo.create_commit(None, sig, sig, message, tree.id, parents)
    repo.references.create(f"refs/heads/{branch}", commit, force=True)
    return str(commit)


def _read(repo: pygit2.Repository, tree: pygit2.Tree, path: str) -> bytes | None:
    try:
        entry = tree[path]
    except KeyError:
        return None
    return bytes(repo[entry.id].peel(pygit2.Blob).data)


def _replace(
    repo: pygit2.Repository, tree: pygit2.Tree | None, parts: list[str], blob: pygit2.Oid | None
) -> pygit2.Oid:
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    name = parts[0]
    if len(parts) == 1:
        if blob is None:
            if tree is not None and name in tree:
                builder.remove(name)
        else:
            builder.insert(name, blob, FileMode.BLOB)
    else:
        sub = repo[tree[name].id].peel(pygit2.Tree) if tree is not None and name in tree else None
        builder.insert(name, _replace(repo, sub, parts[1:], blob), FileMode.TREE)
    return builder.write()
