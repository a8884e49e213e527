"""Reading the origin into the shadow repository: its head marker, and surveys of its files.

A marker this side wrote names a commit of the shadow. Any other (another machine's, or none
over files not written by the ledger) is placed by a *survey*: the origin listed, the files whose
signature changed since the last survey read, and a commit made holding exactly the origin's
files, recorded as what that marker stands for. A survey under a marker of ours is recorded for
it too: the files may have changed without the marker saying so (deleted or edited at the
origin), and what is built next is built on the files as they are.
"""

from __future__ import annotations

from ledger.adapters.git.writing import CommitWriter
from ledger.adapters.sparse.backends import Backend
from ledger.adapters.sparse.state import State, Survey
from ledger.domain.errors import RemoteUnavailable

_MARKER_CHARS = 100
"""A marker longer than this is kept (and shown) only up to here: it is not one of ours."""


class OriginReader(CommitWriter):
    """The origin's head and files as commits of the shadow held in ``self._repo``."""

    _backend: Backend
    _state: State

    @property
    def origin(self) -> str:
        """Where the files are written (a folder, ``s3://bucket/prefix``)."""
        return self._backend.origin

    def _marker(self) -> str | None:
        """The origin's head marker now: a commit id, or whatever else it holds; None if absent."""
        data = self._backend.get_marker()
        if data is None:
            return None
        text = data.decode("utf-8", "replace").strip()[:_MARKER_CHARS]
        return text or None

    def _local_for(self, marker: str | None) -> str | None:
        """The shadow's commit for ``marker``: the survey recorded for it when there is one (the
        files as they are, changed or not under the marker), else the marker's own commit."""
        if marker is None:
            return None
        found = self._state.head_for(marker)
        if found is not None and self.has_commit(found):
            return found
        return marker if self.has_commit(marker) else None

    def _origin_empty(self) -> bool:
        """The origin lists no index file (one page of the listing read at most)."""
        return next(iter(self._backend.listing()), None) is None

    def _surveyed(self, marker: str | None) -> str | None:
        """A survey; recorded as what ``marker`` stands for when it is not a commit of the shadow."""
        head = self._survey()
        if marker is not None and head is not None and head != marker:
            # What the marker stands for from now on: files changed under a marker of ours (a
            # file deleted or edited at the origin) are built on as they are, never as it says.
            self._state.remember(marker, head)
        return head

    def _survey(self) -> str | None:
        """List the origin, read what changed since the last survey, and commit it on top of that
        survey's commit (from scratch the first time); None when the origin holds no file."""
        listing = dict(self._backend.listing())
        previous = self._state.survey()
        if previous.commit is not None and not self.has_commit(previous.commit):
            previous = Survey()
        known = previous.files if previous.commit is not None else {}
        changed = sorted(key for key, signature in listing.items() if known.get(key) != signature)
        removed = sorted(key for key in known if key not in listing)
        if previous.commit is not None and not changed and not removed:
            return previous.commit
        read = dict(self._backend.get_many(changed))
        changes: dict[str, bytes | None] = dict.fromkeys(removed)
        for key in changed:
            data = read.get(key)
            changes[key] = data
            if data is None:
                listing.pop(key, None)  # gone since it was listed
        message = f"survey of {self.origin}: {len(read)} file(s) read, {len(removed)} gone"
        try:
            if not listing:
                head = None
            elif previous.commit is None:
                files = ((key, data) for key, data in sorted(changes.items()) if data is not None)
                head = self.build_commit(files, message)
            else:
                head = self.commit(previous.commit, changes, message) or previous.commit
        except ValueError as exc:
            raise RemoteUnavailable(
                f"the files of {self.origin} cannot form one index: {exc}", remote=self.origin
            ) from exc
        self._state.save_survey(Survey(head, listing if head is not None else {}))
        return head

    def _after_push(self, base: str | None, commit: str, written: dict[str, str], deleted: list[str]) -> None:
        """Carry the survey's listing over the push, when it described the pushed-over head, so
        the next survey does not read again the files just written."""
        previous = self._state.survey_commit()
        if base is None:
            files = dict(written)
            for path in deleted:
                files.pop(path, None)
            self._state.save_survey(Survey(commit, files))
        elif previous is not None and self._same_tree(previous, base):
            self._state.carry(commit, written, deleted)

    def _same_tree(self, one: str, other: str) -> bool:
        return self.has_commit(one) and self._commit(one).tree.id == self._commit(other).tree.id
