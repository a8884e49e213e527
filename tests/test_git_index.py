"""The git edge: commits in a bare clone, pushes, and read-backs against real bare remotes."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest
from pygit2.enums import Option

from ledger.adapters.git.index import (
    PENDING_REF,
    READBACK_REF,
    GitIndex,
    PushReport,
    ReadBack,
    classify_error,
    strip_credentials,
)
from ledger.domain.errors import InfrastructureError, RemoteUnavailable

UNREACHABLE_URL = "git://127.0.0.1:1/x.git"
SECRET_URL = "http://user:secret@127.0.0.1:1/x.git"


@pytest.fixture
def remote_path(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    pygit2.init_repository(path, bare=True)
    return path


@pytest.fixture
def index(tmp_path: Path, remote_path: Path) -> Iterator[GitIndex]:
    with GitIndex.open(tmp_path / "local.git", str(remote_path)) as opened:
        yield opened


def remote_branch(remote_path: Path, branch: str = "master") -> str | None:
    repo = pygit2.Repository(remote_path)
    ref = repo.references.get(f"refs/heads/{branch}")
    return None if ref is None else str(ref.target)


def remote_blob(remote_path: Path, path: str) -> bytes | None:
    repo = pygit2.Repository(remote_path)
    head = repo.references.get("refs/heads/master")
    if head is None:
        return None
    commit = repo[head.target]
    assert isinstance(commit, pygit2.Commit)
    try:
        blob = commit.tree[path]
    except KeyError:
        return None
    assert isinstance(blob, pygit2.Blob)
    return blob.data


def foreign_commit(remote_path: Path, parent: str | None, files: dict[str, bytes], message: str) -> str:
    """Commit straight into the remote, as another writer would, and move its branch."""
    repo = pygit2.Repository(remote_path)
    base = repo[parent].peel(pygit2.Commit).tree if parent else None
    builder = repo.TreeBuilder(base) if base is not None else repo.TreeBuilder()
    # Only top-level files, which is all these tests need.
    for name, data in files.items():
        builder.insert(name, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
    signature = pygit2.Signature("other", "other@example.org", 1_700_000_000, 0)
    oid = repo.create_commit(
        "refs/heads/master", signature, signature, message, builder.write(), [parent] if parent else []
    )
    return str(oid)


class TestStripCredentials:
    def test_removes_user_and_password(self) -> None:
        """A user:password@ part is removed and the rest of the URL is kept."""
        assert strip_credentials(SECRET_URL) == "http://127.0.0.1:1/x.git"

    def test_removes_a_bare_token(self) -> None:
        """A token given as the user name alone is removed too."""
        assert strip_credentials("https://ghp_abc123@github.com/o/r.git") == ("https://github.com/o/r.git")

    def test_removes_credentials_from_every_url_in_a_message(self) -> None:
        """Every URL inside a longer error text loses its credentials."""
        text = "cannot reach https://a:b@h1/x and ssh://git:pw@h2:22/y; giving up"
        assert strip_credentials(text) == "cannot reach https://h1/x and ssh://h2:22/y; giving up"

    def test_password_containing_at_sign(self) -> None:
        """A raw @ inside the password does not leave part of the password behind."""
        assert strip_credentials("https://u:p@ss@host/x") == "https://host/x"

    @pytest.mark.parametrize(
        "text",
        [
            "http://127.0.0.1:1/x.git",
            "/srv/git/index.git",
            "git@github.com:o/r.git",
            "see https://host/path@v1 for details",
        ],
    )
    def test_leaves_text_without_credentials_alone(self, text: str) -> None:
        """Text that carries no URL credentials is returned unchanged."""
        assert strip_credentials(text) == text


class TestClassifyError:
    @pytest.mark.parametrize(
        ("message", "kind"),
        [
            ("could not read from socket: timed out", "timeout"),
            ("failed to connect to 10.0.0.1: Operation timed out", "timeout"),
            ("failed to connect to 127.0.0.1: Connection refused", "unreachable"),
            ("failed to resolve address for nope.invalid: Name or service not known", "unreachable"),
            ("could not resolve host: nope.invalid", "unreachable"),
            ("unexpected http status code: 500", "other"),
            ("unpacking the sent packfile failed on the remote", "other"),
        ],
    )
    def test_classifies_libgit2_messages(self, message: str, kind: str) -> None:
        """libgit2's error texts map to timeout, unreachable or other."""
        assert classify_error(message) == kind


class TestOpen:
    def test_creates_a_bare_clone_when_missing(self, tmp_path: Path) -> None:
        """Opening a missing path initialises a bare repository there."""
        path = tmp_path / "deep" / "local.git"
        with GitIndex.open(path, "/nowhere"):
            pass
        assert pygit2.Repository(path).is_bare

    def test_reopens_an_existing_clone(self, tmp_path: Path, remote_path: Path) -> None:
        """Commits written before reopening are still readable afterwards."""
        path = tmp_path / "local.git"
        with GitIndex.open(path, str(remote_path)) as first:
            commit = first.commit(None, {"a": b"1"}, "one")
        assert commit is not None
        with GitIndex.open(path, str(remote_path)) as second:
            assert second.read_blob(commit, "a") == b"1"

    def test_refuses_a_directory_that_is_not_a_repository(self, tmp_path: Path) -> None:
        """A non-empty directory that is not a git repository is not taken over."""
        (tmp_path / "stuff.txt").write_text("x")
        with pytest.raises(InfrastructureError):
            GitIndex.open(tmp_path, "/nowhere")

    def test_refuses_a_clone_with_a_work_tree(self, tmp_path: Path) -> None:
        """A repository with a work tree is refused: the clone must be bare."""
        pygit2.init_repository(tmp_path / "work", bare=False)
        with pytest.raises(InfrastructureError, match="not a bare"):
            GitIndex.open(tmp_path / "work", "/nowhere")

    def test_sets_the_network_timeouts(self, tmp_path: Path) -> None:
        """The connect and server timeouts given to open() are set in libgit2."""
        with GitIndex.open(tmp_path / "l.git", "/x", connect_timeout_ms=1234, timeout_ms=5678):
            assert pygit2.option(Option.GET_SERVER_CONNECT_TIMEOUT) == 1234
            assert pygit2.option(Option.GET_SERVER_TIMEOUT) == 5678

    def test_hides_credentials_in_the_remote_url_property(self, tmp_path: Path) -> None:
        """The remote URL the index exposes carries no credentials."""
        with GitIndex.open(tmp_path / "l.git", SECRET_URL) as opened:
            assert opened.remote_url == "http://127.0.0.1:1/x.git"

    def test_rejects_an_invalid_branch(self, tmp_path: Path) -> None:
        """A branch name git cannot store is refused."""
        with pytest.raises(ValueError, match="branch"):
            GitIndex.open(tmp_path / "l.git", "/x", branch="bad..name")


class TestCommit:
    def test_root_commit_with_nested_paths(self, index: GitIndex) -> None:
        """A root commit holds every path with its bytes, nested directories included."""
        commit = index.commit(None, {"config.json": b"{}", "1/a": b"a", "se/rd/serde": b"s"}, "first")
        assert commit is not None
        assert dict(index.files(commit)) == {"config.json": b"{}", "1/a": b"a", "se/rd/serde": b"s"}
        repo = pygit2.Repository(index.path)
        assert repo[commit].peel(pygit2.Commit).parents == []

    def test_deletion_prunes_empty_directories(self, index: GitIndex) -> None:
        """Deleting the last file of a directory removes the directory, up to the root."""
        first = index.commit(None, {"se/rd/serde": b"s", "se/xy/sexy": b"x", "1/a": b"a"}, "one")
        assert first is not None
        second = index.commit(first, {"se/rd/serde": None, "1/a": None, "2/ab": b"ab"}, "two")
        assert second is not None
        tree = pygit2.Repository(index.path)[second].peel(pygit2.Commit).tree
        assert sorted(entry.name or "" for entry in tree) == ["2", "se"]
        se = tree["se"]
        assert isinstance(se, pygit2.Tree)
        assert [entry.name for entry in se] == ["xy"]
        assert dict(index.files(second)) == {"se/xy/sexy": b"x", "2/ab": b"ab"}

    def test_keeps_unchanged_subtrees_shared(self, index: GitIndex) -> None:
        """Subtrees off the changed paths keep their ids: only changed paths are rewritten."""
        first = index.commit(None, {"a/x": b"1", "b/y": b"2"}, "one")
        assert first is not None
        second = index.commit(first, {"a/x": b"changed"}, "two")
        assert second is not None
        repo = pygit2.Repository(index.path)
        old, new = repo[first].peel(pygit2.Commit).tree, repo[second].peel(pygit2.Commit).tree
        assert old["b"].id == new["b"].id
        assert old["a"].id != new["a"].id
        assert repo[second].peel(pygit2.Commit).parent_ids == [pygit2.Oid(hex=first)]

    def test_returns_none_when_nothing_changed(self, index: GitIndex) -> None:
        """Rewriting a path with its own bytes or deleting an absent path commits nothing."""
        first = index.commit(None, {"1/a": b"a"}, "one")
        assert first is not None
        assert index.commit(first, {"1/a": b"a", "2/zz": None, "1/b/c": None}, "same") is None
        assert index.commit(first, {}, "empty") is None

    def test_returns_none_for_an_empty_root_commit(self, index: GitIndex) -> None:
        """A root commit with no files is not written."""
        assert index.commit(None, {}, "nothing") is None
        assert index.commit(None, {"a": None}, "nothing") is None

    def test_deleting_everything_leaves_an_empty_tree(self, index: GitIndex) -> None:
        """Deleting every file yields a commit with the empty tree."""
        first = index.commit(None, {"d/a": b"a"}, "one")
        assert first is not None
        second = index.commit(first, {"d/a": None}, "two")
        assert second is not None
        assert list(index.files(second)) == []

    def test_replaces_a_file_by_a_directory(self, index: GitIndex) -> None:
        """Writing below a path that was a file turns that path into a directory."""
        first = index.commit(None, {"a": b"file"}, "one")
        assert first is not None
        second = index.commit(first, {"a/b": b"nested"}, "two")
        assert second is not None
        assert dict(index.files(second)) == {"a/b": b"nested"}

    def test_deleting_below_a_file_keeps_the_file(self, index: GitIndex) -> None:
        """Deleting a path below an existing file leaves that file alone."""
        first = index.commit(None, {"a": b"file"}, "one")
        assert first is not None
        assert index.commit(first, {"a/b": None}, "noop") is None

    def test_author_time_and_pending_ref(self, index: GitIndex, remote_path: Path) -> None:
        """The commit carries the configured author and time, sets the pending ref, moves no branch."""
        when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
        commit = index.commit(None, {"a": b"1"}, "msg\n", when=when)
        assert commit is not None
        repo = pygit2.Repository(index.path)
        obj = repo[commit].peel(pygit2.Commit)
        assert (obj.author.name, obj.author.email) == ("ledger", "ledger@localhost")
        assert obj.committer.time == int(when.timestamp())
        assert obj.committer.offset == 0
        assert obj.message == "msg\n"
        assert str(repo.references[PENDING_REF].target) == commit
        assert list(repo.branches) == []
        assert remote_branch(remote_path) is None

    @pytest.mark.parametrize("path", ["", "/a", "a/", "a//b", "a/../b", "./a", ".git/config", "a\0b"])
    def test_rejects_paths_git_cannot_store(self, index: GitIndex, path: str) -> None:
        """Empty, dotted, .git and NUL-bearing path components are refused."""
        with pytest.raises(ValueError, match="invalid index path"):
            index.commit(None, {path: b"x"}, "bad")

    def test_rejects_a_path_that_is_both_file_and_directory(self, index: GitIndex) -> None:
        """One change set cannot write a path both as a file and as a directory."""
        with pytest.raises(ValueError, match="file"):
            index.commit(None, {"a": b"1", "a/b": b"2"}, "bad")

    def test_rejects_an_unknown_parent(self, index: GitIndex) -> None:
        """A parent that is not a commit in the clone is refused."""
        with pytest.raises(ValueError, match="not a commit"):
            index.commit("0" * 40, {"a": b"1"}, "orphan")
        with pytest.raises(ValueError, match="full commit id"):
            index.commit("abc", {"a": b"1"}, "short")


class TestReadBlob:
    def test_reads_content_and_absence(self, index: GitIndex) -> None:
        """A file reads as its bytes; a missing path, a directory or no commit read as None."""
        commit = index.commit(None, {"se/rd/serde": b"s"}, "one")
        assert index.read_blob(commit, "se/rd/serde") == b"s"
        assert index.read_blob(commit, "se/rd/other") is None
        assert index.read_blob(commit, "se/rd") is None
        assert index.read_blob(commit, "se/rd/serde/below") is None
        assert index.read_blob(None, "se/rd/serde") is None


class TestPushAndReadBack:
    def test_push_ok_then_read_back_confirmed(self, index: GitIndex, remote_path: Path) -> None:
        """A fast-forward push reports ok, lands on the remote, and the read-back confirms it."""
        commit = index.commit(None, {"1/a": b"a", "config.json": b"{}"}, "one")
        assert commit is not None
        assert index.push(commit) == PushReport("ok", None)
        assert remote_branch(remote_path) == commit
        assert remote_blob(remote_path, "1/a") == b"a"
        back = index.read_back(commit, {"1/a": b"a", "config.json": b"{}", "2/zz": None})
        assert back == ReadBack(
            remote_head=commit,
            contains_commit=True,
            mismatched=(),
            method="ls-remote+fetch: head, ancestry, 3 blobs",
        )
        assert back.confirmed
        repo = pygit2.Repository(index.path)
        assert str(repo.references[READBACK_REF].target) == commit

    def test_second_push_fast_forwards(self, index: GitIndex, remote_path: Path) -> None:
        """A child of the remote head is pushed as a fast-forward and confirmed."""
        first = index.commit(None, {"a": b"1"}, "one")
        assert first is not None
        assert index.push(first).status == "ok"
        second = index.commit(first, {"a": b"2", "b/c": b"3"}, "two")
        assert second is not None
        assert index.push(second).status == "ok"
        assert remote_branch(remote_path) == second
        assert index.read_back(second, {"a": b"2", "b/c": b"3"}).confirmed

    def test_read_back_of_an_ancestor_is_contained(self, index: GitIndex, remote_path: Path) -> None:
        """A commit the remote head descends from is contained, judged by the head's blobs."""
        first = index.commit(None, {"a": b"1"}, "one")
        assert first is not None
        assert index.push(first).status == "ok"
        later = foreign_commit(remote_path, first, {"b": b"2"}, "someone else")
        back = index.read_back(first, {"a": b"1"})
        assert back.remote_head == later
        assert back.contains_commit
        assert back.confirmed

    def test_read_back_without_a_push(self, index: GitIndex, remote_path: Path) -> None:
        """When the push never happened the empty remote confirms nothing."""
        commit = index.commit(None, {"a": b"1"}, "one")
        assert commit is not None
        back = index.read_back(commit, {"a": b"1", "gone": None})
        assert back.remote_head is None
        assert not back.contains_commit
        assert back.mismatched == ("a",)
        assert not back.confirmed
        assert READBACK_REF not in pygit2.Repository(index.path).references

    def test_read_back_when_the_remote_holds_another_history(
        self, index: GitIndex, remote_path: Path
    ) -> None:
        """A remote whose head does not descend from the commit does not contain it."""
        other = foreign_commit(remote_path, None, {"a": b"1"}, "unrelated")
        commit = index.commit(None, {"a": b"1"}, "mine")
        assert commit is not None
        back = index.read_back(commit, {"a": b"1"})
        assert back.remote_head == other
        assert not back.contains_commit
        assert back.mismatched == ()
        assert not back.confirmed

    def test_read_back_lists_blobs_that_differ(self, index: GitIndex, remote_path: Path) -> None:
        """After someone else changes a path on top of the push, read-back lists that path."""
        commit = index.commit(None, {"a": b"1", "b": b"2"}, "one")
        assert commit is not None
        assert index.push(commit).status == "ok"
        foreign_commit(remote_path, commit, {"b": b"changed", "c": b"new"}, "someone else")
        back = index.read_back(commit, {"a": b"1", "b": b"2", "c": None})
        assert back.contains_commit
        assert back.mismatched == ("b", "c")
        assert not back.confirmed

    def test_read_back_sees_a_rolled_back_ref(self, index: GitIndex, remote_path: Path) -> None:
        """A push reported ok but rolled back on the remote afterwards is not confirmed."""
        first = index.commit(None, {"a": b"1"}, "one")
        assert first is not None
        assert index.push(first).status == "ok"
        second = index.commit(first, {"a": b"2"}, "two")
        assert second is not None
        assert index.push(second).status == "ok"
        pygit2.Repository(remote_path).references["refs/heads/master"].set_target(first)
        back = index.read_back(second, {"a": b"2"})
        assert back.remote_head == first
        assert not back.contains_commit
        assert back.mismatched == ("a",)

    def test_non_fast_forward_is_rejected_before_sending(self, index: GitIndex, remote_path: Path) -> None:
        """libgit2 refuses a non-fast-forward itself: status rejected, its text, remote untouched."""
        base = index.commit(None, {"a": b"0"}, "base")
        assert base is not None
        left = index.commit(base, {"a": b"left"}, "left")
        right = index.commit(base, {"a": b"right"}, "right")
        assert left is not None
        assert right is not None
        assert index.push(left).status == "ok"
        report = index.push(right)
        assert report == PushReport("rejected", "cannot push non-fastforwardable reference")
        assert remote_branch(remote_path) == left

    def test_push_over_unknown_remote_commits_is_rejected(self, index: GitIndex, remote_path: Path) -> None:
        """A remote head the clone has never seen makes libgit2 refuse the push as well."""
        foreign_commit(remote_path, None, {"a": b"theirs"}, "theirs")
        mine = index.commit(None, {"a": b"mine"}, "mine")
        assert mine is not None
        report = index.push(mine)
        assert report.status == "rejected"
        assert report.message is not None
        assert "not present locally" in report.message
        assert remote_blob(remote_path, "a") == b"theirs"

    def test_push_to_an_unreachable_remote_is_an_error(self, tmp_path: Path) -> None:
        """A refused connection is reported as an unreachable error, quickly and without raising."""
        with GitIndex.open(tmp_path / "l.git", UNREACHABLE_URL, connect_timeout_ms=2000) as idx:
            commit = idx.commit(None, {"a": b"1"}, "one")
            assert commit is not None
            started = time.monotonic()
            report = idx.push(commit)
        assert time.monotonic() - started < 2.0
        assert report.status == "error"
        assert report.error_kind == "unreachable"
        assert report.message is not None
        assert "refused" in report.message.lower()

    def test_push_of_an_unknown_commit_is_refused(self, index: GitIndex) -> None:
        """Pushing a commit the clone does not hold is a caller error, not a push report."""
        with pytest.raises(ValueError, match="not a commit"):
            index.push("1" * 40)

    def test_read_back_of_an_unreachable_remote_raises(self, tmp_path: Path) -> None:
        """A remote that cannot be read raises RemoteUnavailable rather than returning evidence."""
        with GitIndex.open(tmp_path / "l.git", SECRET_URL) as idx:
            commit = idx.commit(None, {"a": b"1"}, "one")
            assert commit is not None
            with pytest.raises(RemoteUnavailable) as caught:
                idx.read_back(commit, {"a": b"1"})
        assert "secret" not in str(caught.value)


class TestRemoteHeadAndFetch:
    def test_empty_remote(self, index: GitIndex) -> None:
        """An empty remote has no head and fetches as None."""
        assert index.remote_head() is None
        assert index.fetch() is None

    def test_head_and_fetch_after_a_push(self, index: GitIndex, remote_path: Path) -> None:
        """After a push both report the pushed commit and the tracking ref points at it."""
        commit = index.commit(None, {"a": b"1"}, "one")
        assert commit is not None
        assert index.push(commit).status == "ok"
        assert index.remote_head() == commit
        assert index.fetch() == commit
        repo = pygit2.Repository(index.path)
        assert str(repo.references["refs/remotes/origin/master"].target) == commit

    def test_fetch_brings_in_foreign_commits(self, index: GitIndex, remote_path: Path) -> None:
        """A commit pushed by someone else becomes readable locally after fetch."""
        other = foreign_commit(remote_path, None, {"x": b"theirs"}, "theirs")
        assert index.fetch() == other
        assert index.read_blob(other, "x") == b"theirs"
        mine = index.commit(other, {"y": b"mine"}, "on top")
        assert mine is not None
        assert index.push(mine).status == "ok"

    def test_fetch_follows_a_deleted_branch(self, index: GitIndex, remote_path: Path) -> None:
        """When the remote branch disappears, fetch returns None and drops the tracking ref."""
        commit = index.commit(None, {"a": b"1"}, "one")
        assert commit is not None
        assert index.push(commit).status == "ok"
        assert index.fetch() == commit
        pygit2.Repository(remote_path).references.delete("refs/heads/master")
        assert index.fetch() is None
        assert "refs/remotes/origin/master" not in pygit2.Repository(index.path).references

    def test_other_branch(self, tmp_path: Path, remote_path: Path) -> None:
        """The configured branch is the one pushed to and read back."""
        with GitIndex.open(tmp_path / "l.git", str(remote_path), branch="main") as idx:
            commit = idx.commit(None, {"a": b"1"}, "one")
            assert commit is not None
            assert idx.push(commit).status == "ok"
            assert idx.remote_head() == commit
        assert remote_branch(remote_path, "main") == commit
        assert remote_branch(remote_path, "master") is None

    @pytest.mark.parametrize("operation", ["remote_head", "fetch"])
    def test_unreachable_remote_raises_without_credentials(self, tmp_path: Path, operation: str) -> None:
        """An unreachable remote raises RemoteUnavailable naming the URL without its password."""
        with GitIndex.open(tmp_path / "l.git", SECRET_URL) as idx, pytest.raises(RemoteUnavailable) as caught:
            getattr(idx, operation)()
        error = caught.value
        assert "secret" not in str(error)
        assert "user" not in str(error)
        assert "http://127.0.0.1:1/x.git" in str(error)
        assert error.details == {"remote": "http://127.0.0.1:1/x.git"}
        assert isinstance(error.__cause__, pygit2.GitError)


class TestFilesAndChangedPaths:
    def test_files_lists_every_blob(self, index: GitIndex) -> None:
        """files() yields every path in the tree with its content."""
        content = {"config.json": b"{}", "1/a": b"a", "3/s/syn": b"syn", "se/rd/serde": b"serde"}
        commit = index.commit(None, content, "one")
        assert commit is not None
        assert dict(index.files(commit)) == content
        assert len(list(index.files(commit))) == len(content)

    def test_changed_paths_from_nothing(self, index: GitIndex) -> None:
        """Without an old commit every path of the new one has changed."""
        commit = index.commit(None, {"b/x": b"1", "a": b"2"}, "one")
        assert commit is not None
        assert index.changed_paths(None, commit) == ["a", "b/x"]

    def test_changed_paths_between_commits(self, index: GitIndex) -> None:
        """Added, modified and deleted paths are listed; untouched ones are not."""
        first = index.commit(None, {"a": b"1", "d/b": b"2", "d/c": b"3", "e/f": b"4"}, "one")
        assert first is not None
        second = index.commit(first, {"a": b"changed", "d/b": None, "n/new": b"5"}, "two")
        assert second is not None
        assert index.changed_paths(first, second) == ["a", "d/b", "n/new"]
        assert index.changed_paths(second, second) == []

    def test_changed_paths_when_a_file_becomes_a_directory(self, index: GitIndex) -> None:
        """A file replaced by a directory lists both the old file and the new files."""
        first = index.commit(None, {"a": b"1"}, "one")
        assert first is not None
        second = index.commit(first, {"a/b": b"2"}, "two")
        assert second is not None
        assert index.changed_paths(first, second) == ["a", "a/b"]


def generated_files(count: int) -> dict[str, bytes]:
    return {
        f"{i % 97:02d}/{i % 89:02d}/{i:06d}": f'{{"name":"c{i}","vers":"1.0.{i}"}}\n'.encode()
        for i in range(count)
    } | {"config.json": b'{"dl":"https://example.org"}\n'}


class TestBuildCommit:
    def test_matches_the_same_content_committed_incrementally(self, index: GitIndex) -> None:
        """A few thousand files built at once give the same tree as commit() does."""
        files = generated_files(3000)
        built = index.build_commit(files.items(), "rebuild")
        incremental = index.commit(None, files, "incremental")
        assert incremental is not None
        repo = pygit2.Repository(index.path)
        assert repo[built].peel(pygit2.Commit).tree.id == repo[incremental].peel(pygit2.Commit).tree.id
        assert dict(index.files(built)) == files
        assert index.changed_paths(incremental, built) == []

    def test_tree_ignores_the_parent_tree(self, index: GitIndex) -> None:
        """The parent is recorded as history only: its files do not carry over."""
        parent = index.commit(None, {"old": b"1", "kept": b"2"}, "old")
        assert parent is not None
        built = index.build_commit([("kept", b"2"), ("new/x", b"3")], "rebuild", parent=parent)
        repo = pygit2.Repository(index.path)
        commit = repo[built].peel(pygit2.Commit)
        assert commit.parent_ids == [pygit2.Oid(hex=parent)]
        assert dict(index.files(built)) == {"kept": b"2", "new/x": b"3"}
        assert str(repo.references[PENDING_REF].target) == built

    def test_last_duplicate_wins_and_empty_is_allowed(self, index: GitIndex) -> None:
        """A path given twice keeps its last content; no files at all give the empty tree."""
        built = index.build_commit([("a", b"1"), ("a", b"2")], "dup")
        assert dict(index.files(built)) == {"a": b"2"}
        assert list(index.files(index.build_commit([], "empty"))) == []

    def test_rejects_conflicting_and_invalid_paths(self, index: GitIndex) -> None:
        """A path that is both a file and a directory, or an invalid path, is refused."""
        with pytest.raises(ValueError, match="file"):
            index.build_commit([("a", b"1"), ("a/b", b"2")], "bad")
        with pytest.raises(ValueError, match="file"):
            index.build_commit([("a/b", b"1"), ("a", b"2")], "bad")
        with pytest.raises(ValueError, match="invalid index path"):
            index.build_commit([("a//b", b"1")], "bad")

    def test_built_commit_pushes_and_passes_fsck(self, index: GitIndex, remote_path: Path) -> None:
        """The written pack is valid for git itself and the commit pushes like any other."""
        files = generated_files(500)
        built = index.build_commit(files.items(), "rebuild")
        assert index.push(built).status == "ok"
        assert index.read_back(built, {"config.json": files["config.json"]}).confirmed
        git = shutil.which("git")
        if git is None:
            pytest.skip("git is not installed")
        for repo in (index.path, remote_path):
            result = subprocess.run(
                [git, f"--git-dir={repo}", "fsck", "--strict", "--no-dangling"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, result.stderr


class TestPushClients:
    def test_push_with_must_be_known(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="push_with"):
            GitIndex.open(tmp_path / "clone.git", "git://127.0.0.1:1/x.git", push_with="svn")  # type: ignore[arg-type]

    @pytest.mark.parametrize("protocol", ["http", "git"])
    def test_git_and_libgit2_push_the_same_commit_to_a_server(self, tmp_path: Path, protocol: str) -> None:
        """``auto`` picks git for a server; both clients land a commit and report it the same way."""
        from ledger.testing.remote import RemoteServer

        server = RemoteServer.start(tmp_path / "srv", protocol=protocol)  # type: ignore[arg-type]
        try:
            auto = GitIndex.open(tmp_path / "a.git", server.url)
            lib = GitIndex.open(tmp_path / "b.git", server.url, push_with="libgit2")
            assert auto._git_for_push() == shutil.which("git") is not None
            assert lib._git_for_push() is None
            first = auto.commit(None, {"1/a": b"one\n"}, "first")
            assert first is not None
            assert auto.push(first).status == "ok"
            assert lib.fetch() == first
            second = lib.commit(first, {"1/a": b"one\ntwo\n"}, "second")
            assert second is not None
            assert lib.push(second).status == "ok"
            assert server.head() == second
            assert auto.fetch() == second
            stale = auto.commit(first, {"1/b": b"b\n"}, "stale")
            assert stale is not None
            assert auto.push(stale).status == "rejected"
            stale_too = lib.commit(first, {"1/c": b"c\n"}, "stale too")
            assert stale_too is not None
            assert lib.push(stale_too).status == "rejected"
            assert auto.read_back(second, {"1/a": b"one\ntwo\n"}).confirmed
            auto.close()
            lib.close()
        finally:
            server.stop()

    def test_a_path_remote_is_pushed_by_libgit2(self, index: GitIndex) -> None:
        assert index._git_for_push() is None


class TestCommitObjects:
    def test_loose_and_packed_commits_have_the_same_tree(
        self, index: GitIndex, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same changes give the same tree whether the new objects go loose or into a pack."""
        import ledger.adapters.git.writing as git_index

        files = {f"{n % 7}/{n % 3}/crate{n}": f"line {n}\n".encode() for n in range(40)}
        base = index.commit(None, files, "base")
        assert base is not None
        changes: dict[str, bytes | None] = {"0/0/crate0": None, "1/1/crate1": b"new\n", "9/new": b"n\n"}
        loose = index.commit(base, changes, "loose")
        monkeypatch.setattr(git_index, "PACK_OBJECTS_AT", 1)
        packs_before = set((index.path / "objects" / "pack").glob("*.pack"))
        packed = index.commit(base, changes, "packed")
        assert loose is not None
        assert packed is not None
        assert len(set((index.path / "objects" / "pack").glob("*.pack")) - packs_before) == 1
        repo = pygit2.Repository(str(index.path))
        assert repo[loose].peel(pygit2.Commit).tree_id == repo[packed].peel(pygit2.Commit).tree_id
        assert dict(index.files(packed)) == {
            **{k: v for k, v in files.items() if k != "0/0/crate0"},
            "1/1/crate1": b"new\n",
            "9/new": b"n\n",
        }
        assert (
            subprocess.run(["git", "--git-dir", str(index.path), "fsck", "--strict"], check=False).returncode
            == 0
        )

    def test_small_packs_are_merged_past_the_limit(
        self, index: GitIndex, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import ledger.adapters.git.writing as git_index

        if shutil.which("git") is None:
            pytest.skip("git is not installed")
        monkeypatch.setattr(git_index, "PACK_OBJECTS_AT", 1)
        monkeypatch.setattr(git_index, "MAX_PACKS", 3)
        head = None
        for n in range(8):
            head = index.commit(head, {f"a/crate{n}": b"x%d\n" % n}, f"c{n}")
            assert head is not None
            index._repo.references.create(f"refs/heads/keep{n}", head, force=True)
        assert len(list((index.path / "objects" / "pack").glob("pack-*.idx"))) <= 4
        assert len(dict(index.files(head))) == 8
