"""Property tests of the domain rules, seeded with the corpus in tests/corpus/index_lines/.

Corpus files named ``valid-*`` hold one index line that must parse and render
back byte for byte; files named ``invalid-*`` hold one that must be refused
with InvalidLine. A single trailing newline is not part of the line.
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Callable
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ledger.domain.errors import InvalidLine, InvalidName, InvalidVersion
from ledger.domain.index_format import IndexLine, parse_line
from ledger.domain.names import MAX_NAME_LENGTH, collision_key, crate_from_path, index_path, validate_name
from ledger.domain.versions import parse_version

CORPUS_DIR = Path(__file__).parent / "corpus" / "index_lines"
CORPUS = {
    path.name: path.read_bytes().removesuffix(b"\n")
    for path in sorted(CORPUS_DIR.iterdir())
    if path.is_file()
}
VALID = {name: data for name, data in CORPUS.items() if name.startswith("valid-")}
INVALID = {name: data for name, data in CORPUS.items() if name.startswith("invalid-")}

FUZZ = settings(max_examples=200, deadline=None, database=None)

F = TypeVar("F", bound=Callable[..., None])


def with_corpus_examples(test: F) -> F:
    """Run ``test`` on every corpus line as an explicit hypothesis example."""
    for data in CORPUS.values():
        test = example(data)(test)
    return test


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# -- strategies for valid input ------------------------------------------------

names = st.from_regex(rf"[A-Za-z][A-Za-z0-9_-]{{0,{MAX_NAME_LENGTH - 1}}}", fullmatch=True)
numbers = st.integers(min_value=0, max_value=2**64 - 1).map(str)
alnum_idents = st.from_regex(r"[0-9A-Za-z-]*[A-Za-z-][0-9A-Za-z-]*", fullmatch=True)
pre_idents = st.one_of(numbers, alnum_idents)
build_idents = st.from_regex(r"[0-9A-Za-z-]+", fullmatch=True)


@st.composite
def version_texts(draw: st.DrawFn) -> str:
    text = ".".join(draw(st.lists(numbers, min_size=3, max_size=3)))
    pre = draw(st.lists(pre_idents, max_size=3))
    build = draw(st.lists(build_idents, max_size=2))
    if pre:
        text += "-" + ".".join(pre)
    if build:
        text += "+" + ".".join(build)
    return text


short_text = st.text(max_size=12)
string_lists = st.lists(short_text, max_size=3)
feature_maps = st.dictionaries(short_text, string_lists, max_size=4)
optional_text = st.none() | short_text
offsets = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
timestamps = st.datetimes(timezones=offsets).map(lambda d: d.isoformat("T", "seconds")) | st.just(
    "2024-05-20T03:58:40.123Z"
)


def _dep_entries() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "name": names,
            "req": st.text(min_size=1, max_size=12),
            "features": string_lists,
            "optional": st.booleans(),
            "default_features": st.booleans(),
            "target": optional_text,
            "kind": st.sampled_from([None, "normal", "dev", "build"]),
        },
        optional={"registry": optional_text, "package": st.none() | names},
    )


def _shuffled(obj: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.permutations(list(obj.items())).map(dict)


valid_lines = st.fixed_dictionaries(
    {
        "name": names,
        "vers": version_texts(),
        "deps": st.lists(_dep_entries().flatmap(_shuffled), max_size=3),
        "cksum": st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        "features": feature_maps,
        "yanked": st.booleans(),
    },
    optional={
        "links": st.none() | st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
        "rust_version": st.none() | st.from_regex(r"1\.[0-9]{1,2}(\.[0-9])?", fullmatch=True),
        "pubtime": timestamps,
    },
)
schemas = st.sampled_from([{}, {"v": 1}]) | feature_maps.map(lambda f: {"v": 2, "features2": f})
"""``v`` and ``features2`` go together: no v (or v 1) without features2, v 2 with it."""
valid_lines = st.tuples(valid_lines, schemas).map(lambda pair: {**pair[0], **pair[1]}).flatmap(_shuffled)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | short_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(short_text, inner, max_size=3),
    max_leaves=12,
)


# -- arbitrary input never escapes the ledger's error tree ----------------------


class TestArbitraryInput:
    @FUZZ
    @with_corpus_examples
    @given(st.binary(max_size=300))
    def test_parse_line_bytes(self, raw: bytes) -> None:
        """Arbitrary bytes either parse or raise InvalidLine, never anything else."""
        with contextlib.suppress(InvalidLine):
            parse_line(raw)

    @FUZZ
    @given(st.text(max_size=300))
    def test_parse_line_text(self, raw: str) -> None:
        """Arbitrary text either parses or raises InvalidLine, never anything else."""
        with contextlib.suppress(InvalidLine):
            parse_line(raw)

    @FUZZ
    @given(
        st.dictionaries(st.sampled_from(["name", "vers", "deps", "cksum", "yanked", "v", "x"]), json_values)
    )
    def test_parse_line_dicts(self, raw: dict[str, Any]) -> None:
        """Arbitrary parsed JSON either parses or raises InvalidLine, never anything else."""
        with contextlib.suppress(InvalidLine):
            parse_line(raw)

    @FUZZ
    @given(st.sampled_from(sorted(VALID.values())), st.integers(0, 10_000), st.binary(max_size=4))
    def test_mutated_valid_lines(self, raw: bytes, position: int, insert: bytes) -> None:
        """A valid corpus line with bytes replaced either parses or raises InvalidLine."""
        at = position % len(raw)
        mutated = raw[:at] + insert + raw[at + 1 :]
        try:
            line = parse_line(mutated)
        except InvalidLine:
            return
        assert parse_line(line.render()) == line

    @FUZZ
    @given(st.text(max_size=80))
    def test_validate_name(self, name: str) -> None:
        """Any text is either returned unchanged as a name or refused with InvalidName."""
        with contextlib.suppress(InvalidName):
            assert validate_name(name) == name

    @FUZZ
    @given(st.text(alphabet=string.digits + ".-+abZ", max_size=30) | st.text(max_size=30))
    def test_parse_version(self, text: str) -> None:
        """Any text is either a version that keeps its text or refused with InvalidVersion."""
        with contextlib.suppress(InvalidVersion):
            assert parse_version(text).text == text


# -- valid input round-trips ----------------------------------------------------


class TestValidInput:
    @FUZZ
    @given(valid_lines)
    def test_line_round_trip(self, obj: dict[str, Any]) -> None:
        """A valid compact line renders back to the same bytes and parses to an equal line."""
        raw = compact(obj)
        line = parse_line(raw)
        assert line.render() == raw
        assert parse_line(line.render()) == line
        assert parse_line(obj) == line

    @FUZZ
    @given(valid_lines)
    def test_yank_touches_only_yanked(self, obj: dict[str, Any]) -> None:
        """Flipping yanked changes that field alone and never the content digest."""
        line = parse_line(obj)
        flipped = parse_line(line.render(yanked=not line.yanked))
        assert flipped.fields == {**line.fields, "yanked": not line.yanked}
        assert list(flipped.fields) == list(line.fields)
        assert flipped.content_digest() == line.content_digest()

    @FUZZ
    @given(names)
    def test_index_path_round_trip(self, name: str) -> None:
        """A valid name's index path leads back to it and never leaves the index."""
        path = index_path(name)
        assert crate_from_path(path) == name.lower()
        assert ".." not in path
        assert not path.startswith("/")
        assert "\\" not in path
        assert collision_key(crate_from_path(path) or "") == collision_key(name)

    @FUZZ
    @given(version_texts(), version_texts())
    def test_version_precedence_is_consistent(self, a_text: str, b_text: str) -> None:
        """Precedence is antisymmetric and ignores build metadata."""
        a, b = parse_version(a_text), parse_version(b_text)
        assert not (a < b and b < a)
        assert (a < b) == (b > a)
        assert (a <= b) == (not a > b)
        assert (a < b) == (parse_version(a.key) < parse_version(b.key))
        assert a.key == a_text.partition("+")[0]


# -- the seed corpus --------------------------------------------------------------


class TestCorpus:
    def test_corpus_has_both_kinds(self) -> None:
        """The corpus holds valid and invalid cases, and every file is one or the other."""
        assert VALID
        assert INVALID
        assert set(VALID) | set(INVALID) == set(CORPUS)

    @pytest.mark.parametrize("name", sorted(VALID))
    def test_valid_case_parses_and_round_trips(self, name: str) -> None:
        """A valid corpus line parses and renders back byte for byte."""
        line = parse_line(VALID[name])
        assert isinstance(line, IndexLine)
        assert line.render() == VALID[name]

    @pytest.mark.parametrize("name", sorted(INVALID))
    def test_invalid_case_is_refused(self, name: str) -> None:
        """An invalid corpus line is refused with InvalidLine and a message."""
        with pytest.raises(InvalidLine) as info:
            parse_line(INVALID[name])
        assert info.value.message
