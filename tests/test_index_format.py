"""Cargo index lines: validation, rendering, digests and whole-file reading."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from ledger.domain.errors import Invalid, InvalidLine
from ledger.domain.index_format import MAX_LINE_BYTES, IndexLine, parse_file, parse_line, render_file

CKSUM = hashlib.sha256(b"serde-1.0.200.crate").hexdigest()


def dep(name: str, req: str, **overrides: Any) -> dict[str, Any]:
    """A dependency entry as crates.io writes it, with fields overridden."""
    entry: dict[str, Any] = {
        "name": name,
        "req": req,
        "features": [],
        "optional": False,
        "default_features": True,
        "target": None,
        "kind": "normal",
    }
    entry.update(overrides)
    return entry


def serde_line(**overrides: Any) -> dict[str, Any]:
    """A serde 1.0.200-shaped line; an override of ``...`` removes the field."""
    line: dict[str, Any] = {
        "name": "serde",
        "vers": "1.0.200",
        "deps": [
            dep("serde_derive", "=1.0.200", optional=True),
            dep("serde_derive", "^1", target="cfg(any())"),
            dep("serde_derive", "^1", kind="dev"),
        ],
        "cksum": CKSUM,
        "features": {"alloc": [], "default": ["std"], "derive": ["serde_derive"], "std": []},
        "yanked": False,
        "links": None,
        "rust_version": "1.31",
    }
    for key, value in overrides.items():
        if value is ...:
            del line[key]
        else:
            line[key] = value
    return line


def compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class TestParseLineAccepts:
    def test_serde_shaped_line(self) -> None:
        """A crates.io-style line with deps and features parses into its parts."""
        line = parse_line(compact(serde_line()))
        assert (line.name, line.vers, line.cksum, line.yanked) == ("serde", "1.0.200", CKSUM, False)
        assert line.version.patch == 200
        assert line.fields["deps"][0]["name"] == "serde_derive"

    def test_features2_and_v2(self) -> None:
        """A line using features2 with ``dep:`` syntax and v=2 is accepted."""
        raw = serde_line(v=2, features2={"derive": ["dep:serde_derive"]})
        assert parse_line(compact(raw)).fields["v"] == 2

    def test_rust_version_and_pubtime(self) -> None:
        """rust_version and an ISO 8601 pubtime are accepted."""
        raw = serde_line(rust_version="1.61", pubtime="2024-04-29T21:25:09Z")
        assert parse_line(compact(raw)).fields["pubtime"] == "2024-04-29T21:25:09Z"

    def test_build_metadata_version(self) -> None:
        """A version with build metadata keeps it in ``vers`` but not in ``key``."""
        line = parse_line(compact(serde_line(vers="1.0.7+x")))
        assert line.vers == "1.0.7+x"
        assert line.key == "1.0.7"

    def test_optional_dep_fields(self) -> None:
        """A renamed dependency from another registry, with null kind, is accepted."""
        renamed = dep("json", "^1", package="serde_json", registry="https://example.org/index")
        raw = serde_line(deps=[{**renamed, "kind": None}], links="z")
        assert parse_line(compact(raw)).fields["deps"][0]["package"] == "serde_json"

    def test_str_and_dict_inputs(self) -> None:
        """Text and already-parsed JSON are accepted as well as bytes, with the same result."""
        raw = serde_line()
        assert parse_line(compact(raw).decode()) == parse_line(raw) == parse_line(compact(raw))

    def test_dict_input_is_copied(self) -> None:
        """Changing the caller's dict afterwards does not change the parsed line."""
        raw = serde_line()
        line = parse_line(raw)
        raw["deps"][0]["name"] = "other"
        assert line.fields["deps"][0]["name"] == "serde_derive"

    def test_line_exactly_at_the_limit(self) -> None:
        """A line of exactly max_bytes is accepted."""
        raw = compact(serde_line())
        assert parse_line(raw, max_bytes=len(raw)).name == "serde"


def _oversized() -> bytes:
    line = serde_line(features={"big": ["x" * MAX_LINE_BYTES]})
    return compact(line)


BAD_LINES = [
    pytest.param(b'{"name":"serde",', "not JSON", None, id="not-json"),
    pytest.param(b'["serde"]', "must be a JSON object", None, id="not-an-object"),
    pytest.param(compact(serde_line(cksum=...)), "cksum is missing", "cksum", id="missing-cksum"),
    pytest.param(
        compact(serde_line(deps={"serde_derive": "^1"})),
        "deps must be a list",
        "deps",
        id="deps-object",
    ),
    pytest.param(
        compact(serde_line(deps=[dep("a", "^1"), dep("b", "^1"), dep("c", "^1", optional="yes")])),
        "deps[2].optional must be a boolean",
        "deps[2].optional",
        id="dep-bad-field",
    ),
    pytest.param(
        compact(serde_line(deps=[dep("a", "^1", public=True)])),
        "deps[0] has unknown field(s) 'public'",
        "deps[0].public",
        id="dep-unknown-field",
    ),
    pytest.param(
        compact(serde_line(deps=[dep("a", "^1", kind="runtime")])),
        "deps[0].kind must be",
        "deps[0].kind",
        id="dep-bad-kind",
    ),
    pytest.param(
        compact(serde_line(deps=[dep("../a", "^1")])),
        "deps[0].name is not a valid crate name",
        "deps[0].name",
        id="dep-bad-name",
    ),
    pytest.param(
        compact(serde_line(deps=[dep("a", "")])),
        "deps[0].req must not be empty",
        "deps[0].req",
        id="dep-empty-req",
    ),
    pytest.param(_oversized(), f"more than the limit of {MAX_LINE_BYTES}", None, id="over-1mib"),
    pytest.param(b'{"name":"caf\xe9"}', "not valid UTF-8", None, id="invalid-utf8"),
    pytest.param(compact(serde_line(v=3)), "a `v` the ledger does not know", "v", id="unknown-v"),
    pytest.param(compact(serde_line(v=True)), "v must be an integer", "v", id="v-bool"),
    pytest.param(compact(serde_line(yanked=0)), "yanked must be a boolean", "yanked", id="yanked-int"),
    pytest.param(
        compact(serde_line(downloads=5)),
        "unknown field(s) 'downloads'",
        "downloads",
        id="unknown-field",
    ),
    pytest.param(
        compact(serde_line(cksum="g" * 64)),
        "cksum must be 64 lowercase hexadecimal",
        "cksum",
        id="cksum-not-hex",
    ),
    pytest.param(compact(serde_line(cksum=CKSUM[:-1])), "cksum must be 64", "cksum", id="cksum-short"),
    pytest.param(compact(serde_line(name="a/b")), "name is not a valid crate name", "name", id="bad-name"),
    pytest.param(compact(serde_line(vers="1.0")), "vers is not a valid version", "vers", id="bad-version"),
    pytest.param(
        compact(serde_line(features={"std": "alloc"})),
        "features['std'] must be a list",
        "features['std']",
        id="feature-not-list",
    ),
    pytest.param(
        compact(serde_line(pubtime="2024-13-01T00:00:00Z")),
        "pubtime must be an ISO 8601",
        "pubtime",
        id="bad-pubtime",
    ),
    pytest.param(compact(serde_line(links=1)), "links must be a string or null", "links", id="links-int"),
    pytest.param(b'{"name":"a","name":"b"}', "the key 'name' more than once", None, id="duplicate-key"),
    pytest.param(b"[" * 100_000, "nests JSON arrays or objects too deeply", None, id="deeply-nested"),
]


class TestParseLineRejects:
    @pytest.mark.parametrize(("raw", "fragment", "field"), BAD_LINES)
    def test_bad_line_names_the_problem(self, raw: bytes, fragment: str, field: str | None) -> None:
        """A bad line raises InvalidLine whose message and ``field`` detail name the problem."""
        with pytest.raises(InvalidLine) as info:
            parse_line(raw)
        assert fragment in info.value.message
        assert info.value.details.get("field") == field

    def test_size_is_checked_before_parsing(self) -> None:
        """An oversized input is refused by its size even if it is not JSON at all."""
        with pytest.raises(InvalidLine, match="is 11 bytes, more than the limit of 10"):
            parse_line(b"not json!!!", max_bytes=10)

    def test_lone_surrogate_escape_is_refused(self) -> None:
        """A JSON escape for a lone surrogate cannot be written back as UTF-8, so it is refused."""
        raw = compact(serde_line()).replace(b'"alloc"', b'"\\ud800"')
        with pytest.raises(InvalidLine, match="surrogate"):
            parse_line(raw)

    def test_dict_input_is_validated(self) -> None:
        """Already-parsed JSON goes through the same checks as text."""
        with pytest.raises(InvalidLine, match="yanked must be a boolean"):
            parse_line(serde_line(yanked="no"))

    def test_invalid_line_is_an_invalid_input_error(self) -> None:
        """InvalidLine sits under Invalid, so it maps to the bad-input exit code."""
        with pytest.raises(Invalid) as info:
            parse_line(b"")
        assert info.value.exit_code == 2


class TestRender:
    def test_round_trip_is_byte_identical(self) -> None:
        """Parsing a compact line and rendering it gives back the very same bytes."""
        raw = compact(serde_line(v=2, features2={"x": ["dep:serde_derive"]}, pubtime="2024-04-29T21:25:09Z"))
        assert parse_line(raw).render() == raw

    def test_non_ascii_is_written_as_utf8(self) -> None:
        """Non-ASCII text is written as UTF-8, not as JSON escapes."""
        raw = compact(serde_line(features={"ünïcode": []}))
        assert "ünïcode".encode() in parse_line(raw).render()

    def test_yank_changes_only_the_yanked_field(self) -> None:
        """Rendering with yanked=True differs from the original in that field alone."""
        line = parse_line(compact(serde_line()))
        yanked = json.loads(line.render(yanked=True))
        assert yanked == {**line.fields, "yanked": True}
        assert list(yanked) == list(line.fields)
        assert line.render(yanked=False) == line.render()

    def test_a_yanked_line_renders_both_ways_as_its_fields(self) -> None:
        """The text kept from parsing and a replaced ``yanked`` both give the fields' JSON."""
        raw = compact(serde_line(yanked=True))
        line = parse_line(json.loads(raw))  # a caller's object: rendered by the ledger
        assert line.render() == line.render(yanked=True) == raw
        assert line.render(yanked=False) == compact({**json.loads(raw), "yanked": False})

    def test_render_does_not_change_the_line(self) -> None:
        """Rendering with a replacement leaves the parsed line's own fields alone."""
        line = parse_line(compact(serde_line()))
        line.render(yanked=True)
        assert line.fields["yanked"] is False

    def test_render_file_terminates_each_line(self) -> None:
        """Each line of a file is followed by a newline, and no lines make an empty file."""
        assert render_file([b"a", b"b"]) == b"a\nb\n"
        assert render_file([]) == b""


class TestContentDigest:
    def test_yank_does_not_change_the_digest(self) -> None:
        """A yanked and an unyanked copy of a line have the same digest."""
        live = parse_line(compact(serde_line()))
        yanked = parse_line(compact(serde_line(yanked=True)))
        assert live.content_digest() == yanked.content_digest()

    def test_any_other_change_changes_the_digest(self) -> None:
        """Changing any field but yanked changes the digest."""
        base = parse_line(compact(serde_line())).content_digest()
        for changed in (
            serde_line(cksum="0" * 64),
            serde_line(rust_version="1.32"),
            serde_line(deps=[]),
        ):
            assert parse_line(changed).content_digest() != base

    def test_digest_is_sha256_of_the_unyanked_line(self) -> None:
        """The digest is the SHA-256 hex of the line rendered with yanked=false."""
        line = parse_line(compact(serde_line(yanked=True)))
        assert line.content_digest() == hashlib.sha256(compact(serde_line())).hexdigest()


class TestParseFile:
    def test_reads_good_and_bad_lines_with_numbers(self) -> None:
        """Every non-empty line is reported with its 1-based number, parsed or with its error."""
        good = compact(serde_line())
        data = render_file([good, b"garbage", b"", compact(serde_line(vers="1.0.201"))])
        entries = parse_file(data)
        assert [number for number, _ in entries] == [1, 2, 4]
        assert isinstance(entries[0][1], IndexLine)
        assert isinstance(entries[1][1], InvalidLine)
        assert isinstance(entries[2][1], IndexLine)
        assert entries[2][1].vers == "1.0.201"

    def test_empty_file_has_no_entries(self) -> None:
        """An empty file yields nothing."""
        assert parse_file(b"") == []

    def test_file_round_trip(self) -> None:
        """Rendering parsed lines back into a file reproduces the file."""
        data = render_file([compact(serde_line()), compact(serde_line(vers="1.0.201"))])
        lines = [entry.render() for _, entry in parse_file(data) if isinstance(entry, IndexLine)]
        assert render_file(lines) == data
