"""A crate's file regenerated from its rows: the fast path for live lines equals a full render."""

from __future__ import annotations

import json

from ledger.domain.crate_files import crate_file
from ledger.domain.index_format import fields_digest, render_fields
from projections.queries import VersionRow
from tests.conftest import make_line


def row(line: dict[str, object], state: str) -> VersionRow:
    text = json.dumps(line, separators=(",", ":"), ensure_ascii=False)
    return VersionRow(str(line["vers"]), str(line["vers"]), state, fields_digest(line), text)


def full_render(rows: list[VersionRow]) -> bytes:
    return b"".join(render_fields(json.loads(r.line), yanked=r.yanked) + b"\n" for r in rows)


def test_no_rows_means_no_file() -> None:
    assert crate_file([]) is None


def test_every_state_and_line_shape_renders_as_a_full_render_does() -> None:
    rows = [
        row(make_line("kaze", "0.1.0"), "published"),
        row(make_line("kaze", "0.1.1"), "yanked"),
        # recorded already yanked (an adopted index), unyanked since
        row(make_line("kaze", "0.1.2", yanked=True), "published"),
        row(make_line("kaze", "0.1.3", yanked=True), "yanked"),
        # no yanked field at all, and a yanked flag placed first
        row({k: v for k, v in make_line("kaze", "0.1.4").items() if k != "yanked"}, "published"),
        row({"yanked": False, **make_line("kaze", "0.1.5", features={"é": ["yanked"]})}, "published"),
        row(make_line("kaze", "0.1.6", features={"x": ['"yanked":false']}), "yanked"),
    ]
    data = crate_file(rows)
    assert data == full_render(rows)
    assert data is not None
    flags = [json.loads(line)["yanked"] for line in data.splitlines()]
    assert flags == [False, True, False, True, False, False, True]


def test_a_live_line_whose_digest_differs_is_rendered_again() -> None:
    line = make_line("kaze", "0.2.0")
    spaced = VersionRow("0.2.0", "0.2.0", "published", fields_digest(line), json.dumps(line))
    assert crate_file([spaced]) == render_fields(line, yanked=False) + b"\n"
