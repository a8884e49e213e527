"""``ledger demo``: the 2020-02-20 incident end to end, on a temporary SQLite store.

Everything is real: the events go into a SQLite file, the index is a git repository served on
127.0.0.1 by the project's own test server (smart HTTP around ``git http-backend``), and the
server plays the outage by answering pushes with no per-ref status, as GitHub did that day.
Nothing leaves the machine and nothing is left running. Then the same story through the real
cargo and ``ledger serve`` (:mod:`ledger.entrypoints.demo_cargo`), when cargo is installed.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any, TextIO

from ledger.bootstrap import open_ledger
from ledger.domain.names import index_path
from ledger.entrypoints.demo_cargo import SKIPPED, cargo_story
from ledger.services.history import summary
from ledger.services.ledger import AsOf, Ledger
from ledger.services.sync import WorkerOptions
from ledger.settings import Settings
from ledger.testing.remote import Mode, RemoteServer
from ledger.testing.tamper import force_push
from projections.consistency import AuditReport

BEFORE = [("serde", "1.0.104"), ("rand", "0.7.3"), ("kaze", "0.1.5")]
INCIDENT = [("kaze", "0.1.6"), ("wasmer-runtime-core", "0.14.0"), ("wasmer-win-exception-handler", "0.14.0")]
OPTIONS = WorkerOptions(max_batch=10, backoff_base=1.0)


def line_for(crate: str, version: str) -> dict[str, Any]:
    return {
        "name": crate,
        "vers": version,
        "deps": [],
        "cksum": hashlib.sha256(f"{crate}@{version}".encode()).hexdigest(),
        "features": {},
        "yanked": False,
    }


class Story:
    """Prints the demo as numbered steps with the ledger's own output under each."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step = 0
        self.marks: dict[str, int] = {}

    def title(self, text: str) -> None:
        self.step += 1
        self.out.write(f"\n== {self.step}. {text}\n")

    def say(self, text: str = "") -> None:
        self.out.write(f"   {text}\n" if text else "\n")

    def audit(self, report: AuditReport, command: str = "ledger audit") -> None:
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items() if v)
        verdict = "in sync" if report.consistent else "OUT OF SYNC"
        code = 0 if report.consistent else 1
        self.say(f"$ {command} -> {verdict} ({counts or 'no discrepancies'}), exit {code}")
        for d in report.discrepancies:
            job = f", job {d.job[:8]}" if d.job else ""
            self.say(f"    {d.cls:<16} {d.crate} {d.version} ({d.difference}{job})")


def run_demo(out: TextIO, *, workdir: Path | None = None) -> int:
    """Tell the story; return 0 when every step came out as the ledger promises."""
    with tempfile.TemporaryDirectory(prefix="ledger-demo-") as tmp:
        root = workdir or Path(tmp)
        server = RemoteServer.start(root / "remote", protocol="http")
        settings = Settings(
            store=f"sqlite:///{root / 'ledger.db'}",
            remote=server.url,
            index_dir=root / "clone.git",
            connect_timeout_ms=2000,
            timeout_ms=4000,
        )
        story = Story(out)
        with server, open_ledger(settings) as ledger:
            ok = _tell(story, ledger, server)
        through_cargo = cargo_story(story, root)
        ok = ok and through_cargo is not False
        verdict = "every step behaved as promised" if ok else "a step did NOT behave as promised"
        if through_cargo is None:
            verdict += f" ({SKIPPED})"
        story.out.write(f"\nledger demo: {verdict}\n")
        return 0 if ok else 1


def _tell(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.out.write(
        "ledger demo: the crates.io incident of 2020-02-20, replayed\n"
        f"   store  {ledger.settings.store_url.redacted}\n"
        f"   remote {server.url} (git smart HTTP on 127.0.0.1)\n"
    )
    steps = (_normal_day, _outage, _recovery, _tampering, _repair, _time_travel, _timeline)
    checks = [step(story, ledger, server) for step in steps]
    return all(checks)


def _normal_day(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.title("A normal day: three publishes, synced and confirmed by reading the remote back")
    for crate, version in BEFORE:
        receipt = ledger.publish(line_for(crate, version), f"{crate}-author")
        story.say(
            f"$ ledger publish {crate} {version} -> job {str(receipt.job)[:8]} at position {receipt.position}"
        )
    result = ledger.sync(OPTIONS)
    story.say(f"$ ledger worker --once -> confirmed {result.confirmed}, open {result.open_left}")
    return result.open_left == 0


def _outage(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.title("The outage: the remote answers pushes with no per-ref status, as on 2020-02-20")
    server.set_mode(Mode.NO_STATUS)
    for crate, version in INCIDENT:
        ledger.publish(line_for(crate, version), f"{crate}-author")
        story.say(f"$ ledger publish {crate} {version}")
    result = ledger.sync(OPTIONS)
    story.marks["outage"] = ledger.views.head()
    story.say(
        f"$ ledger worker --once -> confirmed {result.confirmed}, open {result.open_left}, exit 1 "
        "(the pusher returned without error; the read-back found nothing)"
    )
    report = ledger.audit()
    story.audit(report)
    story.say("$ ledger history kaze@0.1.6")
    for record in ledger.history("kaze", "0.1.6"):
        story.say("  " + summary(record))
    return not report.consistent and report.counts["stuck"] == 3


def _recovery(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.title("The outage ends: the next pass pushes, reads back and confirms")
    server.set_mode(Mode.OK)
    result = ledger.sync(OPTIONS)
    story.say(f"$ ledger worker --once -> confirmed {result.confirmed}, open {result.open_left}")
    report = ledger.audit()
    story.audit(report)
    story.marks["recovered"] = ledger.views.head()
    return report.consistent and not report.discrepancies


def _tampering(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.title("Later: an admin deletes rand 0.7.3; then a bad force-push rewrites the index")
    ledger.delete("rand", "0.7.3", "admin", "malicious code reported")
    ledger.sync(OPTIONS)
    story.say("$ ledger delete rand 0.7.3 --reason 'malicious code reported'; ledger worker --once")
    _bad_force_push(server)
    story.say("someone force-pushes a commit that brings rand 0.7.3 back and drops kaze 0.1.6")
    story.audit(ledger.audit(), "ledger audit  # the ledger's own records: nothing to see")
    scan = ledger.scan_index()
    report = ledger.audit()
    story.audit(report, "ledger audit --scan  # read the real index")
    story.say(f"  (scanned head {str(scan.head)[:12]}, {scan.examined} files examined)")
    classes = {(d.crate, d.version): d.cls for d in report.discrepancies}
    return classes.get(("rand", "0.7.3")) == "phantom" and classes.get(("kaze", "0.1.6")) == "lost"


def _repair(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.title("Repair by replay: one commit makes the index equal to the database view")
    plan = ledger.repair(dry_run=True, remove_phantoms=True)
    story.say(f"$ ledger repair --dry-run --remove-phantoms -> {plan.changed} file(s) would change")
    repaired = ledger.repair(remove_phantoms=True)
    story.say(
        f"$ ledger repair --remove-phantoms -> {repaired.changed} file(s), commit "
        f"{str(repaired.commit)[:12]}, confirmed {repaired.confirmed}"
    )
    ledger.scan_index()
    report = ledger.audit()
    story.audit(report, "ledger audit --scan")
    again = ledger.repair(remove_phantoms=True)
    story.say(f"$ ledger repair --remove-phantoms (again) -> {again.changed} file(s): nothing to do")
    return bool(report.consistent and not report.discrepancies and repaired.confirmed and again.changed == 0)


def _time_travel(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.title("Time travel: the audit as the ledger knew it during the outage, and after it")
    past = ledger.audit(at=AsOf(position=story.marks["outage"]))
    story.audit(past, f"ledger audit --at {past.position}")
    later = ledger.audit(at=AsOf(position=story.marks["recovered"]))
    story.audit(later, f"ledger audit --at {later.position}")
    return past.counts["stuck"] == 3 and later.consistent


def _timeline(story: Story, ledger: Ledger, server: RemoteServer) -> bool:
    story.title("The whole story from one command, and its tamper evidence")
    story.say("$ ledger timeline")
    for record in ledger.timeline():
        story.say("  " + summary(record))
    verified = ledger.verify()
    story.say(
        f"$ ledger verify -> {verified.events} events, hash chain {'intact' if verified.ok else 'BROKEN'}"
    )
    return verified.ok


def _bad_force_push(server: RemoteServer) -> None:
    """Rewrite the remote's branch: rand 0.7.3's line comes back, kaze 0.1.6's line is dropped."""

    def add_rand(data: bytes | None) -> bytes:
        return (data or b"") + json.dumps(line_for("rand", "0.7.3"), separators=(",", ":")).encode() + b"\n"

    def drop_kaze(data: bytes | None) -> bytes:
        return b"".join(ln for ln in (data or b"").splitlines(keepends=True) if b'"0.1.6"' not in ln)

    edits = {index_path("rand"): add_rand, index_path("kaze"): drop_kaze}
    force_push(server.bare_path, server.branch, edits, "restore index from backup")
