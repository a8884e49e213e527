"""Crate names: validation, collision folding and the registry index layout."""

from __future__ import annotations

import pytest

from ledger.domain.errors import Invalid, InvalidName
from ledger.domain.names import MAX_NAME_LENGTH, collision_key, crate_from_path, index_path, validate_name


class TestValidateName:
    @pytest.mark.parametrize(
        "name",
        [
            "a",
            "serde",
            "Serde",
            "cargo-edit",
            "serde_json",
            "x86_64",
            "A-1_b",
            "a" * MAX_NAME_LENGTH,
        ],
    )
    def test_accepts_valid_names_unchanged(self, name: str) -> None:
        """A valid name is returned exactly as given, case included."""
        assert validate_name(name) == name

    @pytest.mark.parametrize(
        ("name", "fragment"),
        [
            pytest.param("", "empty", id="empty"),
            pytest.param("a" * 65, "65 characters long", id="65-characters"),
            pytest.param("crâte", "non-ASCII character 'â'", id="non-ascii"),
            pytest.param("../x", "start with an ASCII letter, not '.'", id="dot-dot-slash"),
            pytest.param("a/b", "character '/'", id="slash"),
            pytest.param("1abc", "start with an ASCII letter, not '1'", id="leading-digit"),
            pytest.param("_abc", "start with an ASCII letter, not '_'", id="leading-underscore"),
            pytest.param("a b", "character ' '", id="space"),
            pytest.param("a\\b", "character '\\\\'", id="backslash"),
            pytest.param("a.b", "character '.'", id="dot"),
        ],
    )
    def test_rejects_bad_names_naming_the_problem(self, name: str, fragment: str) -> None:
        """A bad name raises InvalidName whose message quotes the name and says what is wrong."""
        with pytest.raises(InvalidName) as info:
            validate_name(name)
        assert repr(name) in info.value.message
        assert fragment in info.value.message
        assert info.value.details == {"name": name}

    def test_invalid_name_is_an_invalid_input_error(self) -> None:
        """InvalidName sits under Invalid, so it maps to the bad-input exit code."""
        with pytest.raises(Invalid) as info:
            validate_name("")
        assert info.value.exit_code == 2


class TestCollisionKey:
    @pytest.mark.parametrize(
        ("a", "b"),
        [("Foo-Bar", "foo_bar"), ("serde-json", "serde_json"), ("ABC", "abc"), ("a-_b", "A__B")],
    )
    def test_folded_names_collide(self, a: str, b: str) -> None:
        """Names equal after lowercasing and folding '-' into '_' share a key."""
        assert collision_key(a) == collision_key(b)

    def test_key_is_lowercase_with_underscores(self) -> None:
        """The key itself is the lowercased name with every '-' turned into '_'."""
        assert collision_key("Cargo-Edit") == "cargo_edit"

    def test_different_names_do_not_collide(self) -> None:
        """Names that differ in more than case and separators keep distinct keys."""
        assert collision_key("foo-bar") != collision_key("foobar")


class TestIndexPath:
    @pytest.mark.parametrize(
        ("name", "path"),
        [
            ("a", "1/a"),
            ("ab", "2/ab"),
            ("abc", "3/a/abc"),
            ("abcd", "ab/cd/abcd"),
            ("Serde", "se/rd/serde"),
            ("cargo-edit", "ca/rg/cargo-edit"),
            ("A", "1/a"),
            ("XyZ", "3/x/xyz"),
        ],
    )
    def test_follows_cargo_layout(self, name: str, path: str) -> None:
        """The path follows cargo's 1/, 2/, 3/x/ and ab/cd/ layout, lowercased."""
        assert index_path(name) == path

    @pytest.mark.parametrize("name", ["", "../x", "a/b", "..", "a" * 65])
    def test_validates_the_name_first(self, name: str) -> None:
        """An invalid name raises InvalidName instead of producing any path."""
        with pytest.raises(InvalidName):
            index_path(name)


class TestCrateFromPath:
    @pytest.mark.parametrize(
        ("path", "name"),
        [
            ("1/a", "a"),
            ("2/ab", "ab"),
            ("3/a/abc", "abc"),
            ("se/rd/serde", "serde"),
            ("ca/rg/cargo-edit", "cargo-edit"),
        ],
    )
    def test_recovers_the_crate_name(self, path: str, name: str) -> None:
        """A well-formed crate path gives back the crate's (lowercase) name."""
        assert crate_from_path(path) == name

    @pytest.mark.parametrize(
        "path",
        [
            "config.json",
            "",
            "se/rd/json",
            "Se/rd/Serde",
            "se/rd/Serde",
            "1/ab",
            "3/b/abc",
            "2/a",
            "/se/rd/serde",
            "se/rd/serde/",
            "./se/rd/serde",
            "se\\rd\\serde",
            "se/rd/../serde",
            ".git/HEAD",
        ],
    )
    def test_rejects_anything_else(self, path: str) -> None:
        """Paths that are not exactly the index path of their file name give None."""
        assert crate_from_path(path) is None
