"""Pkt-lines of a receive-pack request, and the fake report-status NO_STATUS and LIE answer with."""

from __future__ import annotations

from ledger.testing.remote.modes import Mode

_FLUSH = b"0000"


def _pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode("ascii") + data


def _pkt_lines(data: bytes) -> list[bytes]:
    """The pkt-lines at the start of ``data`` up to the first flush packet."""
    lines: list[bytes] = []
    pos = 0
    while pos + 4 <= len(data):
        try:
            size = int(data[pos : pos + 4], 16)
        except ValueError:
            break
        if size < 4:
            break
        lines.append(data[pos + 4 : pos + size])
        pos += size
    return lines


def _push_commands(body: bytes) -> tuple[list[bytes], set[bytes]]:
    """The refs a receive-pack request updates, and the capabilities the client asked for."""
    refs: list[bytes] = []
    caps: set[bytes] = set()
    for index, line in enumerate(_pkt_lines(body)):
        command, _, cap_text = line.rstrip(b"\n").partition(b"\0")
        if index == 0:
            caps = set(cap_text.split())
        parts = command.split(b" ")
        if len(parts) == 3:
            refs.append(parts[2])
    return refs, caps


def _report_status(lines: list[bytes], caps: set[bytes]) -> bytes:
    """A report-status made of ``lines``, side-band wrapped if the client asked for it."""
    report = b"".join(_pkt(line) for line in lines) + _FLUSH
    if b"side-band-64k" in caps:
        limit = 65515
    elif b"side-band" in caps:
        limit = 995
    else:
        return report
    packets = [_pkt(b"\x01" + report[i : i + limit]) for i in range(0, len(report), limit)]
    return b"".join(packets) + _FLUSH


def fake_report(mode: Mode, body: bytes) -> bytes:
    """The answer to a receive-pack request whose pack is dropped on the floor.

    LIE says every ref was updated; NO_STATUS says the pack unpacked and nothing about any ref.
    """
    refs, caps = _push_commands(body)
    lines = [b"unpack ok\n"]
    if mode is Mode.LIE:
        lines += [b"ok " + ref + b"\n" for ref in refs]
    return _report_status(lines, caps)
