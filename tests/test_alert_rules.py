"""The shipped alert rules, tested with promtool on series of the 2020-02-20 incident.

``promtool test rules`` replays the incident: the page fires within the grace period of the
first stuck version and resolves after the repair. A copy of the test that expects a page where
the series say none should fire must fail: the rule tests can fail. Without promtool the tests
skip, except under ``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
INCIDENT = ROOT / "deploy" / "prometheus" / "tests" / "incident_2020_02_20.yml"
SPARSE_STUCK = ROOT / "deploy" / "prometheus" / "tests" / "sparse_target_stuck.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool must be installed under CI=true (Debian's prometheus package)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)


def test_the_rules_are_valid(promtool: str) -> None:
    checked = run(promtool, "check", "rules", str(RULES), cwd=ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout


def test_the_incident_pages_within_the_grace_period_and_resolves_after_the_repair(promtool: str) -> None:
    tested = run(promtool, "test", "rules", INCIDENT.name, cwd=INCIDENT.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_a_stuck_sparse_target_pages_naming_it_and_not_the_git_one(promtool: str) -> None:
    tested = run(promtool, "test", "rules", SPARSE_STUCK.name, cwd=SPARSE_STUCK.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_a_rule_test_fails_when_the_series_say_the_page_should_not_fire(
    promtool: str, tmp_path: Path
) -> None:
    """Expect the page at minute 1, before any version is stuck: promtool must report a failure."""
    text = INCIDENT.read_text().replace("../alerts.yml", str(RULES))
    wrong = text.replace(
        "      - eval_time: 1m\n        alertname: LedgerVersionsStuck\n        exp_alerts: []\n",
        "      - eval_time: 1m\n        alertname: LedgerVersionsStuck\n        exp_alerts:\n"
        "          - exp_labels:\n              severity: page\n",
        1,
    )
    assert wrong != text
    (tmp_path / "wrong.yml").write_text(wrong)
    tested = run(promtool, "test", "rules", "wrong.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "FAILED" in tested.stdout + tested.stderr


def test_every_rule_has_a_runbook_entry_naming_a_ledger_command() -> None:
    rules = re.findall(r"- alert: (\w+)", RULES.read_text())
    runbook = RUNBOOK.read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", runbook, flags=re.S | re.M))
    assert set(rules) == set(sections)
    for name in rules:
        assert f"docs/runbook.md#{name.lower()}" in RULES.read_text()
        assert "`ledger " in sections[name], name
