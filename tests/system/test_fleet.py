"""Watching many machines with what users already run: offsite's metrics scraped through a
real node_exporter (Debian's, its textfile collector) from a sandbox where jobs ran, clean
for `promtool check metrics`; the alert rules the package ships pass `promtool check
rules` and their own `promtool test rules`."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from offsite_lab.sandbox import Sandbox

from offsite import unitnames
from offsite.run import run

from . import repos
from .servers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path("/var/cache/offsite-dev/prometheus")  # scripts/setup unpacks them there
PROMTOOL = TOOLS / "promtool"
NODE_EXPORTER = TOOLS / "prometheus-node-exporter"
RULES = ROOT / "packaging" / "prometheus" / "offsite-alerts.yml"
RULE_TESTS = Path(__file__).parent / "prometheus" / "offsite-alerts.test.yml"
OFFSITE = str(Path(sys.prefix) / "bin" / "offsite")
CONFIG = "/etc/offsite/offsite.yaml"
TEXTFILES = "/var/lib/prometheus/node-exporter"  # where Debian's node_exporter looks
REPO = "/srv/borg/main"


def test_the_shipped_alert_rules_pass_promtool() -> None:
    checked = run([PROMTOOL, "check", "rules", RULES])
    assert "SUCCESS: 4 rules found" in checked.stdout, checked.stdout
    tested = run([PROMTOOL, "test", "rules", RULE_TESTS], check=False)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def samples(text: str, name: str) -> dict[str, float]:
    """The label sets (as written) and values of metric name in a scrape."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name):].rpartition(" ")
            out[labels] = float(value)
    return out


def test_node_exporter_serves_offsite_metrics_that_promtool_finds_clean(sandbox: Sandbox) -> None:
    sandbox.run(["mkdir", "-p", TEXTFILES])
    repos.init(sandbox, REPO)
    sandbox.write("/srv/data/a", "a\n" * 1000)
    repos.borg(sandbox, "create", "--", f"{REPO}::one", "/srv/data")
    sandbox.write(CONFIG, json.dumps({
        "repositories": {"main": {"path": REPO, **repos.SETTINGS},
                         "gone": {"path": "/srv/borg/gone", **repos.SETTINGS}},
        "jobs": {"weekly": {"kind": "borg-check", "repositories": ["main"],
                            "stale_after": "8d"},
                 "broken": {"kind": "borg-check", "repositories": ["gone"]}},
    }))
    sandbox.run([OFFSITE, "--config", CONFIG, "install"])
    assert sandbox.systemctl("start", unitnames.job_unit("weekly"), check=False).returncode == 0
    assert sandbox.systemctl("start", unitnames.job_unit("broken"), check=False).returncode != 0
    port = free_port()
    sandbox.run(["systemd-run", "--unit=test-node-exporter", "--", str(NODE_EXPORTER),
                 f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                 "--collector.textfile", f"--collector.textfile.directory={TEXTFILES}"])
    wait_for("node_exporter to answer", lambda: _answers(port), 30)
    wait_for("the agent's heartbeat and both runs in the scrape", lambda: (
        "offsite_agent_heartbeat_timestamp_seconds" in (text := scrape(port))
        and 'offsite_job="broken"' in text), 60)
    text = scrape(port)
    assert samples(text, "offsite_job_last_result") == {
        '{offsite_job="broken"}': 4.0, '{offsite_job="weekly"}': 0.0}, text
    assert samples(text, "offsite_job_stale_after_seconds") == {
        '{offsite_job="weekly"}': 8 * 86400.0}
    assert list(samples(text, "node_textfile_scrape_error").values()) == [0.0]
    linted = run([PROMTOOL, "check", "metrics"], input=text, check=False)
    offsite_lines = [line for line in (linted.stdout + linted.stderr).splitlines()
                     if "offsite" in line]
    assert linted.returncode == 0 and not offsite_lines, linted.stdout + linted.stderr


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True
