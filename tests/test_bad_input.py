"""Bad input through ``ledger publish -``: refused with a clear message, and nothing written."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger.bootstrap import open_ledger
from ledger.entrypoints.cli import app
from ledger.settings import Settings

LineFactory = Callable[..., dict[str, Any]]
CLEAN_ENV = dict.fromkeys(
    ("LEDGER_STORE", "LEDGER_REMOTE", "LEDGER_BRANCH", "LEDGER_ACTOR", "LEDGER_INDEX_DIR")
)


def as_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@dataclass(frozen=True)
class Case:
    """One bad input: lines published first, the bytes sent, and the refusal expected."""

    data: Callable[[LineFactory], bytes]
    message: str
    error: str = "InvalidLine"
    code: int = 2
    before: tuple[tuple[str, str], ...] = ()
    store: str | None = None


def line_with(**fields: Any) -> Callable[[LineFactory], bytes]:
    return lambda line: as_bytes(line(**fields))


def line_without(field: str) -> Callable[[LineFactory], bytes]:
    return lambda line: as_bytes({k: v for k, v in line().items() if k != field})


def good(line: LineFactory) -> bytes:
    return as_bytes(line())


CASES = [
    pytest.param(Case(line_with(name=""), "it is empty"), id="empty-name"),
    pytest.param(Case(line_with(name="a" * 65), "65 characters long"), id="name-65-characters"),
    pytest.param(Case(line_with(name="kazé"), "non-ASCII character 'é'"), id="name-non-ascii"),
    pytest.param(Case(line_with(name="../x"), "must start with an ASCII letter"), id="name-dot-dot-slash"),
    pytest.param(Case(line_with(name="a/b"), "character '/'"), id="name-with-slash"),
    pytest.param(
        Case(
            line_with(name="Kaze"),
            "collides with the existing crate 'kaze'",
            "NameCollision",
            before=(("kaze", "0.1.0"),),
        ),
        id="name-collides-by-case",
    ),
    pytest.param(
        Case(
            line_with(name="my_crate"),
            "collides with the existing crate 'my-crate'",
            "NameCollision",
            before=(("my-crate", "0.1.0"),),
        ),
        id="name-collides-by-dash-underscore",
    ),
    pytest.param(Case(line_with(vers="1.0"), "has 2 part(s)"), id="version-two-parts"),
    pytest.param(Case(line_with(vers="01.0.0"), "leading zero"), id="version-leading-zero"),
    pytest.param(
        Case(
            line_with(vers="1.0.0+x"),
            "already published (as 1.0.0)",
            "AlreadyPublished",
            before=(("kaze", "1.0.0"),),
        ),
        id="version-build-metadata-after-release",
    ),
    pytest.param(Case(lambda _: b"name=kaze vers=0.1.6", "the line is not JSON"), id="not-json"),
    pytest.param(Case(lambda _: b"[1, 2]", "must be a JSON object, not list"), id="json-array"),
    pytest.param(Case(line_without("cksum"), "cksum is missing"), id="missing-cksum"),
    pytest.param(Case(line_with(deps={"serde": "1"}), "deps must be a list"), id="deps-wrong-type"),
    pytest.param(
        Case(line_with(links="x" * (1024 * 1024)), "more than 1048576 bytes"),
        id="line-over-1-mib",
    ),
    pytest.param(
        Case(lambda line: as_bytes(line()).replace(b"kaze", b"ka\xffze"), "not valid UTF-8"),
        id="invalid-utf-8",
    ),
    pytest.param(Case(line_with(v=3), "a `v` the ledger does not know"), id="unknown-v"),
    pytest.param(Case(line_with(homepage="https://x"), "unknown field(s) 'homepage'"), id="unknown-field"),
    pytest.param(Case(lambda _: b"", "is empty"), id="empty-input"),
    pytest.param(
        Case(lambda line: as_bytes(line()) + b"\n" + as_bytes(line(vers="0.1.7")), "holds 2 lines"),
        id="two-lines",
    ),
    pytest.param(
        Case(good, "is malformed", "Invalid", store="postgresql://u:secret@127.0.0.1:notaport/x"),
        id="store-url-malformed",
    ),
    pytest.param(
        Case(good, "is not understood", "Invalid", store="mysql://u:secret@127.0.0.1/x"),
        id="store-url-unknown-scheme",
    ),
    pytest.param(
        Case(
            good,
            "cannot reach the PostgreSQL store",
            "StoreUnavailable",
            3,
            store="postgresql://u:secret@127.0.0.1:1/x",
        ),
        id="store-unreachable",
    ),
]


class TestPublishBadInput:
    @pytest.mark.parametrize("case", CASES)
    def test_bad_input_is_refused_and_writes_nothing(
        self, store_url: str, line: LineFactory, case: Case
    ) -> None:
        """Each bad input exits with its code, names the problem in one JSON error, and writes no event."""
        runner = CliRunner(env=CLEAN_ENV)
        for name, vers in case.before:
            setup = runner.invoke(
                app, ["--store", store_url, "publish", "-"], input=as_bytes(line(name, vers))
            )
            assert setup.exit_code == 0, setup.stderr
        with open_ledger(Settings(store=store_url)) as ledger:
            head = ledger.views.head()

        result = runner.invoke(
            app, ["--store", case.store or store_url, "--json", "publish", "-"], input=case.data(line)
        )

        assert result.exit_code == case.code, result.stderr
        document = json.loads(result.stdout)
        assert document["ok"] is False
        assert document["error"]["type"] == case.error
        assert case.message in document["error"]["message"]
        assert result.stderr.startswith("error: ")
        assert len(result.stderr.splitlines()) == 1
        assert "secret" not in result.stdout + result.stderr
        with open_ledger(Settings(store=store_url)) as ledger:
            assert ledger.views.head() == head
