"""Versions: strict SemVer 2.0.0 parsing, the uniqueness key and precedence."""

from __future__ import annotations

import itertools

import pytest

from ledger.domain.errors import InvalidVersion
from ledger.domain.versions import Version, parse_version

SPEC_CHAIN = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
]


class TestParseVersion:
    def test_parses_all_parts(self) -> None:
        """Every part of a full version lands in its own field, and text is kept."""
        v = parse_version("1.2.3-alpha.1+build.5")
        assert (v.major, v.minor, v.patch) == (1, 2, 3)
        assert v.pre == ("alpha", "1")
        assert v.build == ("build", "5")
        assert v.text == "1.2.3-alpha.1+build.5"
        assert str(v) == v.text

    @pytest.mark.parametrize(
        "text",
        [
            "0.0.0",
            "1.0.200",
            "10.20.30",
            "1.0.0-0",
            "1.0.0-0a",
            "1.0.0-x-y-z.--",
            "1.0.0+001",
            "1.0.0+21AF26D3----117B344092BD",
            "1.0.0-alpha+beta",
            "18446744073709551615.0.0",
        ],
    )
    def test_accepts_valid_semver(self, text: str) -> None:
        """Versions the SemVer 2.0.0 grammar allows are accepted as written."""
        assert parse_version(text).text == text

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            pytest.param("", "empty", id="empty"),
            pytest.param("1.0", "MAJOR.MINOR.PATCH", id="two-parts"),
            pytest.param("1.0.0.0", "MAJOR.MINOR.PATCH", id="four-parts"),
            pytest.param("01.0.0", "major '01' has a leading zero", id="leading-zero-major"),
            pytest.param("1.00.0", "minor '00' has a leading zero", id="leading-zero-minor"),
            pytest.param("1.0.0-01", "'01' has a leading zero", id="leading-zero-pre"),
            pytest.param(" 1.0.0", "whitespace", id="leading-space"),
            pytest.param("1.0.0\n", "whitespace", id="trailing-newline"),
            pytest.param("1.0.0-", "pre-release identifiers must not be empty", id="empty-pre"),
            pytest.param("1.0.0-a..b", "must not be empty", id="empty-pre-ident"),
            pytest.param("1.0.0+", "build identifiers must not be empty", id="empty-build"),
            pytest.param("1.0.0-a_b", "'_'", id="underscore-in-pre"),
            pytest.param("1.0.0+a+b", "'+'", id="two-plus"),
            pytest.param("1.0.0-β", "non-ASCII", id="non-ascii"),
            pytest.param("1.0.x", "patch must be a non-empty run of digits", id="letter-patch"),
            pytest.param("v1.0.0", "it starts with 'v'", id="v-prefix"),
            pytest.param("18446744073709551616.0.0", "64 bits", id="u64-overflow"),
            pytest.param("1" * 5000 + ".0.0", "64 bits", id="huge-number"),
        ],
    )
    def test_rejects_bad_versions_naming_the_rule(self, text: str, fragment: str) -> None:
        """A bad version raises InvalidVersion quoting the version and the rule it breaks."""
        with pytest.raises(InvalidVersion) as info:
            parse_version(text)
        assert repr(text) in info.value.message
        assert fragment in info.value.message
        assert info.value.details == {"version": text}


class TestVersionKey:
    def test_build_metadata_is_not_part_of_the_key(self) -> None:
        """1.0.7 and 1.0.7+x share a key, so they cannot both be published."""
        assert parse_version("1.0.7+x").key == parse_version("1.0.7").key == "1.0.7"

    def test_pre_release_is_part_of_the_key(self) -> None:
        """A pre-release is a different version from its release."""
        assert parse_version("1.0.7-rc.1+x").key == "1.0.7-rc.1"


class TestPrecedence:
    @pytest.mark.parametrize(
        ("lower", "higher"),
        list(itertools.pairwise(SPEC_CHAIN)),
        ids=[f"{a}<{b}" for a, b in itertools.pairwise(SPEC_CHAIN)],
    )
    def test_semver_spec_chain_neighbours(self, lower: str, higher: str) -> None:
        """Each step of the SemVer 2.0.0 example chain is strictly increasing."""
        a, b = parse_version(lower), parse_version(higher)
        assert a < b
        assert a <= b
        assert b > a
        assert b >= a
        assert not b < a

    def test_sorting_shuffled_chain_restores_spec_order(self) -> None:
        """Sorting the example chain in any order yields the spec's order."""
        versions = [parse_version(t) for t in reversed(SPEC_CHAIN)]
        assert [v.text for v in sorted(versions)] == SPEC_CHAIN

    @pytest.mark.parametrize(
        ("lower", "higher"),
        [
            ("1.0.0", "2.0.0"),
            ("2.0.0", "2.1.0"),
            ("2.1.0", "2.1.1"),
            ("1.9.0", "1.10.0"),
            ("1.0.0-2", "1.0.0-10"),
            ("1.0.0-999", "1.0.0-a"),
            ("1.0.0-Z", "1.0.0-a"),
            ("0.9.9", "1.0.0-alpha"),
        ],
    )
    def test_numeric_and_ascii_ordering(self, lower: str, higher: str) -> None:
        """Numbers compare numerically, identifiers in ASCII order, numbers before words."""
        assert parse_version(lower) < parse_version(higher)

    def test_build_metadata_is_ignored_by_precedence(self) -> None:
        """Versions differing only in build metadata are neither lower nor higher."""
        a, b = parse_version("1.0.0+a"), parse_version("1.0.0+b")
        assert not a < b
        assert not b < a
        assert a <= b
        assert a >= b

    def test_equality_compares_the_whole_version(self) -> None:
        """Equal versions are the same text; build metadata still tells them apart."""
        assert parse_version("1.0.0+a") == parse_version("1.0.0+a")
        assert parse_version("1.0.0+a") != parse_version("1.0.0+b")
        assert isinstance(hash(parse_version("1.0.0")), int)

    def test_version_is_frozen(self) -> None:
        """A Version cannot be changed after parsing."""
        v: Version = parse_version("1.0.0")
        with pytest.raises(AttributeError):
            v.major = 2  # type: ignore[misc]
