"""``ledger demo``: the incident story end to end, from a fresh process, with nothing left behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ledger.testing.cargo import cargo_available


@pytest.fixture(scope="module")
def run() -> subprocess.CompletedProcess[str]:
    """One run of ``python -m ledger demo`` shared by the tests of this module."""
    return subprocess.run(
        [sys.executable, "-m", "ledger", "demo"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


class TestDemo:
    def test_exits_zero_and_says_every_step_behaved(self, run: subprocess.CompletedProcess[str]) -> None:
        """The demo exits 0 and ends by saying every step behaved as promised."""
        assert run.returncode == 0, run.stdout + run.stderr
        assert run.stdout.rstrip().endswith("every step behaved as promised")

    def test_tells_the_incident(self, run: subprocess.CompletedProcess[str]) -> None:
        """The outage shows the three versions stuck with no-status attempts, then confirmed."""
        out = run.stdout
        for crate, version in [
            ("kaze", "0.1.6"),
            ("wasmer-runtime-core", "0.14.0"),
            ("wasmer-win-exception-handler", "0.14.0"),
        ]:
            assert f"stuck            {crate} {version}" in out
        assert "reported=no_status" in out
        assert "reason=no_status" in out
        assert "confirmed 3, open 0" in out

    def test_finds_and_repairs_the_tampering(self, run: subprocess.CompletedProcess[str]) -> None:
        """The scan finds the phantom and the lost version; the repair fixes them and a second finds nothing."""
        out = run.stdout
        assert "phantom          rand 0.7.3" in out
        assert "lost             kaze 0.1.6" in out
        assert "(again) -> 0 file(s)" in out
        assert "hash chain intact" in out

    def test_uses_only_loopback(self, run: subprocess.CompletedProcess[str]) -> None:
        """The only remote the demo names is on 127.0.0.1."""
        remotes = [ln for ln in run.stdout.splitlines() if ln.strip().startswith("remote ")]
        assert remotes
        assert all("http://127.0.0.1:" in ln for ln in remotes)

    def test_tells_it_again_through_cargo(self, run: subprocess.CompletedProcess[str]) -> None:
        """With cargo installed, cargo publish waits through the outage and finishes once the
        version is confirmed; without it, the demo says it skipped that part."""
        out = run.stdout
        if not cargo_available():
            assert "cargo is not installed here: the part through `cargo publish` was skipped" in out
            return
        assert out.count("cargo saw the version in the index and printed Published") == 2
        assert "stuck            kaze 0.1.7" in out
        assert "cargo is still waiting: yes" in out
        assert "$ cargo fetch  # a project depending on kaze 0.1 -> exit 0" in out
