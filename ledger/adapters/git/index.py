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

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import pygit2
from pygit2.enums import ObjectType, Option

from ledger.adapters.git.push import (
    CLI_SCHEMES,
    NON_FAST_FORWARD_MARKERS,
    PushCallbacks,
    cli_report,
    run_with_silence_limit,
    strip_credentials,
)
from ledger.adapters.git.reading import COMMIT_ID, holds
from ledger.adapters.git.writing import PENDING_REF, CommitWriter, open_bare
from ledger.domain.errors import RemoteUnavailable, classify_error
from ledger.ports import ErrorKind, PushReport, PushStatus, ReadBack
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


READBACK_REF = "refs/ledger/readback"
"""Points at the remote head fetched by the latest :meth:`GitIndex.read_back`."""

# libgit2 refuses a non-fast-forward update itself, before anything is sent, for
# every transport; the server never gets to say so per ref.
_NETWORK_ERRORS = (pygit2.GitError, OSError)

# Pack files written by ``build_commit``: object type numbers and the tree modes.


_TREE_CACHE_LIMIT = 1 << 20
"""The largest tree libgit2 keeps in its object cache. Its default (4 KiB) leaves out the index's
directory trees of more than ~100 entries, which every push reads and inflates again while it
marks the remote head's whole tree as already present: about a third of the CPU time a push
spends in this process on an index of 139k files, whose trees take about 9 MiB of the cache."""

_CACHE_MAX_SIZE = 64 << 20
"""libgit2's object cache bound (its default is 256 MiB). Trees of earlier commits stay cached until
the bound is reached, about 30 KiB a push, so a long-running worker would otherwise grow by the
whole default; 64 MiB still holds every tree of a 139k-file index several times over."""


class GitIndex(CommitWriter):
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
        repo = open_bare(path, "the index clone")
        return cls(repo, remote_url, branch=branch, author=author, timeout_ms=timeout_ms, push_with=push_with)

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

    def twin(self) -> GitIndex:
        """The same clone opened again (a repository handle of its own) for another thread."""
        repo = open_bare(Path(self._repo.path), "the index clone")
        return GitIndex(
            repo,
            self._url,
            branch=self._branch,
            author=self._author,
            timeout_ms=int(self._timeout_s * 1000),
            push_with=self._push_with,
        )

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

    def survey(self) -> str | None:
        """The head a fetch reads: a commit names every file it holds."""
        return self.fetch()

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
        callbacks = PushCallbacks()
        remote = self._new_remote()
        try:
            remote.push([f"{commit}:{self._branch_ref}"], callbacks=callbacks)
        except _NETWORK_ERRORS as exc:
            text = strip_credentials(str(exc))
            if any(marker in text for marker in NON_FAST_FORWARD_MARKERS):
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
        if self._push_with == "auto" and not self._url.startswith(CLI_SCHEMES):
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
            code, out, err = run_with_silence_limit(argv, env, self._timeout_s)
        except OSError as exc:
            text = strip_credentials(str(exc))
            return PushReport("error", text, classify_error(text))
        if code is None:
            text = f"git push to {self.remote_url}: timed out after {self._timeout_s:g} s without an answer"
            return PushReport("error", text, "timeout")
        return cli_report(code, out, err, self._branch_ref)

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
                COMMIT_ID.fullmatch(commit) is not None
                and commit in self._repo
                and self._repo.descendant_of(head, commit)
            )
            tree = self._commit(head).tree
            mismatched = tuple(path for path in sorted(expected) if not holds(tree, path, expected[path]))
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


def _branch_ref(branch: str) -> str:
    ref = f"refs/heads/{branch}"
    if not pygit2.reference_is_valid_name(ref):
        raise ValueError(f"invalid branch name {branch!r}")
    return ref
