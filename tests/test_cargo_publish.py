"""The publish rule: cargo's publish body framing, and the index line derived from its metadata."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Any

import pytest

from ledger.domain.cargo_publish import (
    PublishRequest,
    index_line,
    normalize_requirement,
    parse_publish_body,
    split_features,
)
from ledger.domain.errors import Invalid
from ledger.domain.index_format import parse_line
from tests.test_index_format import dep as index_dep

CRATE = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4  # stands in for a gzipped tarball
CKSUM = hashlib.sha256(CRATE).hexdigest()

# The metadata cargo 1.95.0 sent for `cargo publish --registry local` of this manifest (registry
# `local` at sparse+http://127.0.0.1:18731/index/, registry `other` at .../other/):
#
#   [package] name = "kaze", version = "0.1.6", links = "kaze", rust-version = "1.70", ...
#   [features] default = ["std"], std = [], fast = ["dep:rand", "rand?/simd_support"], old = ["tempfile"]
#   [dependencies] rand = { version = "0.8", optional = true }
#                  serde_renamed = { package = "serde", version = "1.0", features = ["derive"],
#                                    default-features = false }
#                  tempfile = { version = "1", optional = true, registry = "other" }
#   [target.'cfg(windows)'.dependencies] winapi = "1"
#   [build-dependencies] cc = "1.0"
#   [dev-dependencies] libc = ">= 1.0, <2"
CARGO_1_95_METADATA = (
    '{"name":"kaze","vers":"0.1.6","deps":[{"optional":true,"default_features":true,"name":"rand",'
    '"features":[],"version_req":"^0.8","target":null,"kind":"normal"},{"optional":false,'
    '"default_features":false,"name":"serde","features":["derive"],"version_req":"^1.0","target":null,'
    '"kind":"normal","explicit_name_in_toml":"serde_renamed"},{"optional":true,"default_features":true,'
    '"name":"tempfile","features":[],"version_req":"^1","target":null,"kind":"normal",'
    '"registry":"sparse+http://127.0.0.1:18731/other/"},{"optional":false,"default_features":true,'
    '"name":"libc","features":[],"version_req":">=1.0, <2","target":null,"kind":"dev"},{"optional":false,'
    '"default_features":true,"name":"cc","features":[],"version_req":"^1.0","target":null,"kind":"build"},'
    '{"optional":false,"default_features":true,"name":"winapi","features":[],"version_req":"^1",'
    '"target":"cfg(windows)","kind":"normal"}],"features":{"default":["std"],"fast":["dep:rand",'
    '"rand?/simd_support"],"old":["tempfile"],"std":[]},"authors":["Alice <a@example.com>"],'
    '"description":"demo","documentation":null,"homepage":null,"readme":"# kaze\\n",'
    '"readme_file":"README.md","keywords":["demo"],"categories":["development-tools"],"license":"MIT",'
    '"license_file":null,"repository":"https://example.com/kaze","badges":{},"links":"kaze",'
    '"rust_version":"1.70"}'
)


def frame(metadata: bytes, crate: bytes = CRATE) -> bytes:
    """A publish body as cargo frames it: u32 LE length, metadata, u32 LE length, .crate."""
    return struct.pack("<I", len(metadata)) + metadata + struct.pack("<I", len(crate)) + crate


def cargo_dep(name: str, version_req: str, **overrides: Any) -> dict[str, Any]:
    """A dependency as cargo 1.95 sends it (``registry`` and ``explicit_name_in_toml`` only when set)."""
    dep: dict[str, Any] = {
        "optional": False,
        "default_features": True,
        "name": name,
        "features": [],
        "version_req": version_req,
        "target": None,
        "kind": "normal",
    }
    dep.update(overrides)
    return dep


def cargo_metadata(**overrides: Any) -> dict[str, Any]:
    """Publish metadata with every field cargo 1.95 sends; an override of ``...`` removes a field."""
    meta: dict[str, Any] = {
        "name": "kaze",
        "vers": "0.1.6",
        "deps": [],
        "features": {},
        "authors": ["Alice <a@example.com>"],
        "description": "Wind, in a crate",
        "documentation": None,
        "homepage": None,
        "readme": None,
        "readme_file": None,
        "keywords": [],
        "categories": [],
        "license": "MIT OR Apache-2.0",
        "license_file": None,
        "repository": "https://example.com/kaze",
        "badges": {},
        "links": None,
        "rust_version": None,
    }
    for key, value in overrides.items():
        if value is ...:
            del meta[key]
        else:
            meta[key] = value
    return meta


def line_for(meta: dict[str, Any]) -> dict[str, Any]:
    """The index line for ``meta`` framed with CRATE, checked to be one the ledger accepts as is."""
    line = index_line(parse_publish_body(frame(json.dumps(meta).encode())))
    assert parse_line(line).fields == line
    return line


def with_dep(**overrides: Any) -> dict[str, Any]:
    """Metadata with one dependency on serde, its fields overridden."""
    dep = cargo_dep("serde", "^1")
    dep.update(overrides)
    return cargo_metadata(deps=[dep])


def with_features(features: dict[str, Any]) -> dict[str, Any]:
    """Metadata with these features."""
    return cargo_metadata(features=features)


def refused(meta: dict[str, Any]) -> Invalid:
    """The error ``index_line`` raises for ``meta`` in a well-framed body."""
    request = parse_publish_body(frame(json.dumps(meta).encode()))
    with pytest.raises(Invalid) as caught:
        index_line(request)
    return caught.value


class TestFraming:
    def test_a_good_body_splits_into_metadata_and_crate(self) -> None:
        meta = cargo_metadata()
        request = parse_publish_body(frame(json.dumps(meta).encode()))
        assert request.metadata == meta
        assert request.crate == CRATE
        assert request.cksum == CKSUM

    def test_cargo_1_95_metadata_reads_as_sent(self) -> None:
        request = parse_publish_body(frame(CARGO_1_95_METADATA.encode()))
        assert request.metadata == json.loads(CARGO_1_95_METADATA)
        assert request.metadata["deps"][1]["explicit_name_in_toml"] == "serde_renamed"

    def test_the_checksum_is_always_the_crate_s_own(self) -> None:
        request = PublishRequest(metadata={}, crate=b"abc")
        assert request.cksum == hashlib.sha256(b"abc").hexdigest()
        with pytest.raises(TypeError):
            PublishRequest(metadata={}, crate=b"abc", cksum="0" * 64)  # type: ignore[call-arg]

    def test_limits_are_inclusive(self) -> None:
        meta = json.dumps(cargo_metadata()).encode()
        request = parse_publish_body(frame(meta), max_crate_bytes=len(CRATE), max_metadata_bytes=len(meta))
        assert request.crate == CRATE

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            (b"", "truncated: 0 byte(s) left where the 4-byte length of the metadata should be"),
            (b"\x02\x00", "truncated: 2 byte(s) left where the 4-byte length of the metadata should be"),
            (struct.pack("<I", 2) + b"{}", "truncated: 0 byte(s) left where the 4-byte length of the .crate"),
            (
                struct.pack("<I", 2) + b"{}\x05\x00",
                "truncated: 2 byte(s) left where the 4-byte length of the .crate",
            ),
            (
                struct.pack("<I", 50) + b"{}" + struct.pack("<I", 1) + b"x",
                "metadata length 50 runs past the end",
            ),
            (
                frame(b"{}", b"abc")[:-1],
                ".crate length 3 runs past the end of the body (only 2 bytes follow it)",
            ),
            (frame(b"{}", b"abc") + b"\x00\x00", "2 trailing byte(s) follow the .crate file"),
            (frame(b"{}", b""), "the .crate file is empty"),
            (frame(b"[1, 2]"), "the metadata must be a JSON object, not list"),
            (frame(b'"kaze"'), "the metadata must be a JSON object, not str"),
            (frame(b"{name: kaze}"), "the metadata is not JSON"),
            (frame(b'{"name": "kaze"'), "the metadata is not JSON"),
            (frame(b'{"name": "\xff"}'), "the metadata is not valid UTF-8 (byte 10)"),
            (frame(b'{"vers": "1.0.0", "vers": "2.0.0"}'), "the metadata has the key 'vers' more than once"),
            (frame(b'{"x": NaN}'), "the metadata holds NaN, which is not a JSON number"),
            (frame(b"[" * 100_000 + b"]" * 100_000), "nests JSON arrays or objects too deeply"),
        ],
    )
    def test_a_malformed_body_is_refused(self, body: bytes, fragment: str) -> None:
        with pytest.raises(Invalid) as caught:
            parse_publish_body(body)
        assert fragment in caught.value.message
        assert caught.value.message.startswith("invalid publish body: ")

    def test_a_metadata_length_that_is_too_short_is_refused(self) -> None:
        meta = json.dumps(cargo_metadata()).encode()
        body = frame(meta)
        lying = struct.pack("<I", len(meta) - 5) + body[4:]
        with pytest.raises(Invalid, match="the metadata is not JSON"):
            parse_publish_body(lying)

    def test_a_crate_length_that_is_too_short_leaves_trailing_bytes(self) -> None:
        meta = b"{}"
        body = struct.pack("<I", 2) + meta + struct.pack("<I", len(CRATE) - 10) + CRATE
        with pytest.raises(Invalid, match="10 trailing byte"):
            parse_publish_body(body)

    def test_a_crate_over_the_limit_is_refused_before_it_is_read(self) -> None:
        body = struct.pack("<I", 2) + b"{}" + struct.pack("<I", 2**32 - 1)
        with pytest.raises(
            Invalid, match=r"the \.crate file is 4294967295 bytes, more than the limit of 10485760"
        ):
            parse_publish_body(body)
        with pytest.raises(Invalid, match=r"the \.crate file is 1024 bytes, more than the limit of 1023"):
            parse_publish_body(frame(b"{}", b"x" * 1024), max_crate_bytes=1023)

    def test_metadata_over_the_limit_is_refused(self) -> None:
        with pytest.raises(Invalid, match="the metadata is 1048577 bytes, more than the limit of 1048576"):
            parse_publish_body(struct.pack("<I", 1024 * 1024 + 1))
        with pytest.raises(Invalid, match="the metadata is 12 bytes, more than the limit of 11"):
            parse_publish_body(frame(b'{"a": "bcd"}'), max_metadata_bytes=11)


class TestIndexLine:
    def test_what_cargo_1_95_sent_becomes_the_line_crates_io_writes(self) -> None:
        line = index_line(parse_publish_body(frame(CARGO_1_95_METADATA.encode())))
        expected = (
            '{"name":"kaze","vers":"0.1.6","deps":['
            '{"name":"cc","req":"^1.0","features":[],"optional":false,"default_features":true,'
            '"target":null,"kind":"build"},'
            '{"name":"libc","req":">=1.0, <2","features":[],"optional":false,"default_features":true,'
            '"target":null,"kind":"dev"},'
            '{"name":"rand","req":"^0.8","features":[],"optional":true,"default_features":true,'
            '"target":null,"kind":"normal"},'
            '{"name":"serde_renamed","req":"^1.0","features":["derive"],"optional":false,'
            '"default_features":false,"target":null,"kind":"normal","package":"serde"},'
            '{"name":"tempfile","req":"^1","features":[],"optional":true,"default_features":true,'
            '"target":null,"kind":"normal","registry":"sparse+http://127.0.0.1:18731/other/"},'
            '{"name":"winapi","req":"^1","features":[],"optional":false,"default_features":true,'
            '"target":"cfg(windows)","kind":"normal"}],'
            f'"cksum":"{CKSUM}",'
            '"features":{"default":["std"],"old":["tempfile"],"std":[]},'
            '"features2":{"fast":["dep:rand","rand?/simd_support"]},'
            '"yanked":false,"links":"kaze","rust_version":"1.70","v":2}'
        )
        assert parse_line(line).render() == expected.encode()

    def test_a_plain_crate(self) -> None:
        line = line_for(
            cargo_metadata(deps=[cargo_dep("serde", "^1.0")], features={"std": [], "default": ["std"]})
        )
        assert line == {
            "name": "kaze",
            "vers": "0.1.6",
            "deps": [index_dep("serde", "^1.0")],
            "cksum": CKSUM,
            "features": {"default": ["std"], "std": []},
            "yanked": False,
        }
        assert list(line) == ["name", "vers", "deps", "cksum", "features", "yanked"]
        assert list(line["features"]) == ["default", "std"]

    def test_a_renamed_dependency_is_listed_under_its_name_in_cargo_toml(self) -> None:
        dep = cargo_dep("serde", "^1.0", features=["derive"], explicit_name_in_toml="serde1")
        line = line_for(cargo_metadata(deps=[dep]))
        assert line["deps"] == [index_dep("serde1", "^1.0", features=["derive"], package="serde")]
        assert list(line["deps"][0])[-1] == "package"

    def test_an_optional_dependency_enabled_with_dep_syntax_goes_to_features2(self) -> None:
        deps = [
            cargo_dep("rand", "^0.8", optional=True),
            cargo_dep("tempfile", "^3", optional=True),
            cargo_dep("serde", "^1", optional=True),
        ]
        features = {
            "fast": ["dep:rand"],
            "full": ["fast", "std"],
            "old": ["tempfile"],
            "serde": ["serde?/std"],
            "std": [],
        }
        line = line_for(cargo_metadata(deps=deps, features=features))
        assert line["deps"][0] == index_dep("rand", "^0.8", optional=True)
        assert line["features"] == {"old": ["tempfile"], "std": []}
        assert line["features2"] == {"fast": ["dep:rand"], "full": ["fast", "std"], "serde": ["serde?/std"]}
        assert line["v"] == 2
        assert list(line)[4:] == ["features", "features2", "yanked", "v"]

    def test_the_implicit_feature_syntax_alone_stays_in_features(self) -> None:
        deps = [cargo_dep("tempfile", "^3", optional=True)]
        line = line_for(cargo_metadata(deps=deps, features={"old": ["tempfile", "tempfile/nightly"]}))
        assert line["features"] == {"old": ["tempfile", "tempfile/nightly"]}
        assert "features2" not in line
        assert "v" not in line

    def test_a_dev_dependency(self) -> None:
        line = line_for(cargo_metadata(deps=[cargo_dep("proptest", "^1.4", kind="dev")]))
        assert line["deps"] == [index_dep("proptest", "^1.4", kind="dev")]

    def test_a_target_specific_dependency(self) -> None:
        deps = [
            cargo_dep("winapi", "^0.3", target="cfg(windows)", features=["winuser"]),
            cargo_dep("libc", "^0.2", target='cfg(all(unix, not(target_os = "macos")))'),
            cargo_dep("wasm-bindgen", "^0.2", target="wasm32-unknown-unknown"),
        ]
        line = line_for(cargo_metadata(deps=deps))
        assert line["deps"] == [
            index_dep("libc", "^0.2", target='cfg(all(unix, not(target_os = "macos")))'),
            index_dep("wasm-bindgen", "^0.2", target="wasm32-unknown-unknown"),
            index_dep("winapi", "^0.3", target="cfg(windows)", features=["winuser"]),
        ]

    def test_a_build_dependency(self) -> None:
        line = line_for(cargo_metadata(deps=[cargo_dep("cc", "^1.0", kind="build")]))
        assert line["deps"] == [index_dep("cc", "^1.0", kind="build")]

    def test_links_and_rust_version(self) -> None:
        line = line_for(cargo_metadata(links="z", rust_version="1.70"))
        assert (line["links"], line["rust_version"]) == ("z", "1.70")
        assert list(line)[-3:] == ["yanked", "links", "rust_version"]
        assert "links" not in line_for(cargo_metadata())
        assert "rust_version" not in line_for(cargo_metadata(links=..., rust_version=...))

    def test_a_dependency_from_another_registry_keeps_its_index_url(self) -> None:
        deps = [
            cargo_dep("serde", "^1", registry="https://github.com/rust-lang/crates.io-index"),
            cargo_dep("tokio", "^1", registry=""),  # the registry being published to
            cargo_dep("rand", "^0.8", registry=None),
        ]
        line = line_for(cargo_metadata(deps=deps))
        assert line["deps"] == [
            index_dep("rand", "^0.8"),
            index_dep("serde", "^1", registry="https://github.com/rust-lang/crates.io-index"),
            index_dep("tokio", "^1"),
        ]

    def test_dependencies_are_sorted_as_crates_io_sorts_them(self) -> None:
        deps = [
            cargo_dep("serde", "^1", kind="dev"),
            cargo_dep("serde", "^1", kind="build"),
            cargo_dep("serde", "^1", target="cfg(unix)"),
            cargo_dep("serde", "^1", optional=True),
            cargo_dep("serde", "^1"),
            cargo_dep("anyhow", "^1", kind="dev"),
            cargo_dep("serde", "=1.0.200"),
        ]
        line = line_for(cargo_metadata(deps=deps))
        assert [(d["name"], d["kind"], d["req"], d["optional"], d["target"]) for d in line["deps"]] == [
            ("anyhow", "dev", "^1", False, None),
            ("serde", "normal", "=1.0.200", False, None),
            ("serde", "normal", "^1", False, None),
            ("serde", "normal", "^1", False, "cfg(unix)"),
            ("serde", "normal", "^1", True, None),
            ("serde", "build", "^1", False, None),
            ("serde", "dev", "^1", False, None),
        ]

    def test_requirements_are_written_in_their_normal_form_and_a_missing_kind_is_normal(self) -> None:
        deps = [cargo_dep("a", "1.0"), cargo_dep("b", ">= 1.2, < 2"), cargo_dep("c", "1.x", kind=None)]
        line = line_for(cargo_metadata(deps=deps))
        assert [(d["req"], d["kind"]) for d in line["deps"]] == [
            ("^1.0", "normal"),
            (">=1.2, <2", "normal"),
            ("1.*", "normal"),
        ]

    def test_fields_cargo_does_not_put_in_the_index_are_ignored(self) -> None:
        meta = cargo_metadata(
            readme="# kaze\n" * 1000, badges={"maintenance": {"status": "passively-maintained"}}
        )
        meta["something_newer"] = {"x": 1}
        assert line_for(meta) == line_for(cargo_metadata())

    def test_a_build_metadata_version_is_kept(self) -> None:
        assert line_for(cargo_metadata(vers="1.0.0-rc.1+build.5"))["vers"] == "1.0.0-rc.1+build.5"


class TestIndexLineRefuses:
    def test_an_invalid_name(self) -> None:
        error = refused(cargo_metadata(name="1kaze"))
        assert error.details == {"field": "name"}
        assert "name is not a valid crate name" in error.message
        assert "must start with an ASCII letter" in error.message

    def test_an_invalid_version(self) -> None:
        error = refused(cargo_metadata(vers="1.0"))
        assert error.details == {"field": "vers"}
        assert "vers is not a valid version" in error.message

    def test_an_invalid_dependency_requirement(self) -> None:
        error = refused(cargo_metadata(deps=[cargo_dep("serde", "^1.0"), cargo_dep("rand", ">=0.8 <0.9")]))
        assert error.details == {"field": "deps[1].version_req"}
        assert "'>=0.8 <0.9' is not a version requirement: expected ',' between comparators" in error.message

    @pytest.mark.parametrize(
        ("meta", "where", "fragment"),
        [
            (cargo_metadata(name=...), "name", "is missing"),
            (cargo_metadata(name=7), "name", "must be a string, not int"),
            (cargo_metadata(name="con"), "name", "Windows device name"),
            (cargo_metadata(vers="v1.0.0"), "vers", "no prefix"),
            (cargo_metadata(deps=...), "deps", "is missing"),
            (cargo_metadata(deps={}), "deps", "must be a list, not dict"),
            (cargo_metadata(deps=["serde"]), "deps[0]", "must be an object, not str"),
            (with_dep(name="serde!"), "deps[0].name", "not a valid crate name"),
            (with_dep(version_req=""), "deps[0].version_req", "found the end"),
            (with_dep(version_req="^01"), "deps[0].version_req", "leading zero"),
            (with_dep(version_req="*, ^1"), "deps[0].version_req", "only comparator"),
            (with_dep(optional="no"), "deps[0].optional", "a boolean"),
            (with_dep(default_features=None), "deps[0].default_features", "missing"),
            (with_dep(features="derive"), "deps[0].features", "a list"),
            (with_dep(features=[1]), "deps[0].features[0]", "a string"),
            (with_dep(features=["de rive"]), "deps[0].features[0]", "contains ' '"),
            (with_dep(kind="test"), "deps[0].kind", '"normal", "dev" or "build"'),
            (with_dep(kind=""), "deps[0].kind", '"normal", "dev" or "build"'),
            (with_dep(target="cfg(unix"), "deps[0].target", "neither cfg"),
            (with_dep(target="cfg(all(unix)"), "deps[0].target", "unbalanced"),
            (with_dep(target=""), "deps[0].target", "neither cfg"),
            (with_dep(registry="crates-io"), "deps[0].registry", "not a registry index URL"),
            (
                with_dep(explicit_name_in_toml="_serde"),
                "deps[0].explicit_name_in_toml",
                "start with an ASCII",
            ),
            (with_dep(artifact=["bin"]), "deps[0].artifact", "artifact dependency"),
            (with_dep(lib=True), "deps[0].lib", "artifact dependency"),
            (cargo_metadata(features=...), "features", "is missing"),
            (cargo_metadata(features=[]), "features", "must be an object"),
            (with_features({"fast": "dep:rand"}), "features['fast']", "a list of strings"),
            (with_features({"fa st": []}), "features['fa st']", "contains ' '"),
            (with_features({"-fast": []}), "features['-fast']", "starts with '-'"),
            (with_features({"fast": ["dep:"]}), "features['fast'][0]", "dependency name is empty"),
            (with_features({"fast": ["rand/"]}), "features['fast'][0]", "feature name is empty"),
            (with_features({"fast": ["dep:rand/simd"]}), "features['fast'][0]", "'dep:rand'"),
            (with_features({"fast": ["9rand/simd"]}), "features['fast'][0]", "an ASCII letter or '_'"),
            (cargo_metadata(links=""), "links", "does not name a native library"),
            (cargo_metadata(links=" z"), "links", "does not name a native library"),
            (cargo_metadata(rust_version="^1.70"), "rust_version", "only digits and up to two dots"),
            (cargo_metadata(rust_version="1.070"), "rust_version", "leading zero"),
            (cargo_metadata(rust_version="1.70.0.1"), "rust_version", "only digits and up to two dots"),
        ],
    )
    def test_a_bad_field_is_named(self, meta: dict[str, Any], where: str, fragment: str) -> None:
        error = refused(meta)
        assert error.details == {"field": where}
        assert error.message.startswith(f"invalid publish metadata: {where} ")
        assert fragment in error.message

    def test_features_valid_for_crates_io_are_accepted(self) -> None:
        features = {
            "_private": [],
            "32-bit": [],
            "serde1.0": [],
            "c++": [],
            "naïve": [],
            "all": ["_private", "32-bit", "serde1.0", "c++", "naïve", "dep:_raw", "_raw?/x-y.z"],
        }
        line = line_for(cargo_metadata(features=features))
        assert line["features2"]["all"] == features["all"]
        assert "naïve" in line["features"]


class TestSplitFeatures:
    def test_features_enabling_a_features2_feature_follow_it(self) -> None:
        old, new = split_features({"a": ["b"], "b": ["c"], "c": ["dep:foo"], "d": ["e"], "e": []})
        assert old == {"d": ["e"], "e": []}
        assert new == {"a": ["b"], "b": ["c"], "c": ["dep:foo"]}

    def test_no_new_syntax_leaves_everything_in_features(self) -> None:
        features = {"default": ["std"], "std": ["serde/std"], "serde": []}
        assert split_features(features) == (features, {})


class TestNormalizeRequirement:
    @pytest.mark.parametrize(
        ("text", "normal"),
        [
            ("1", "^1"),
            ("1.2", "^1.2"),
            ("1.2.3", "^1.2.3"),
            ("^1.2.3", "^1.2.3"),
            ("~1.2", "~1.2"),
            ("=1.2.3-alpha.1+build.5", "=1.2.3-alpha.1"),
            (">= 1.2, < 2", ">=1.2, <2"),
            ("  >1 , <=3.4.5 ", ">1, <=3.4.5"),
            ("*", "*"),
            (" x", "*"),
            ("X ", "*"),
            ("1.*", "1.*"),
            ("1.x.X", "1.*"),
            ("1.2.*", "1.2.*"),
            ("^1.*", "^1"),
            (">=1.2.*", ">=1.2"),
            (", ".join(["<9"] * 32), ", ".join(["<9"] * 32)),
        ],
    )
    def test_accepted(self, text: str, normal: str) -> None:
        assert normalize_requirement(text) == normal

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("", "expected the major version number, found the end"),
            ("1.", "expected the minor version number, found the end"),
            ("a.b", "expected the major version number, found 'a'"),
            ("01", "the major version number '01' has a leading zero"),
            ("18446744073709551616", "does not fit in 64 bits"),
            ("1.*.3", "a version number follows a wildcard"),
            ("*, 1", "the wildcard '*' must be the only comparator"),
            ("*1", "unexpected '1' after the wildcard '*'"),
            ("1.0 2.0", "expected ',' between comparators, found '2'"),
            ("1,", "expected the major version number, found the end"),
            ("1.0.0-", "a pre-release identifier is empty"),
            ("1.0.0-a..b", "a pre-release identifier is empty"),
            ("1.0.0-01", "the pre-release identifier '01' has a leading zero"),
            ("1.0.0+", "a build identifier is empty"),
            ("1.0-alpha", "expected ',' between comparators, found '-'"),
            ("\t1", "expected the major version number, found '\\t'"),
            (", ".join(["<9"] * 33), "more than 32 comparators"),
        ],
    )
    def test_refused(self, text: str, problem: str) -> None:
        with pytest.raises(ValueError, match=re.escape(problem)):
            normalize_requirement(text)
