"""The configuration reference cannot drift: the keys the parser asks for are the keys the
reference lists, and docs/config-reference.md is what configref generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from offsite.config import fields, reader, reference, schema

from .test_config import write

ROOT = Path(__file__).resolve().parents[2]

# every section and sub-section the parser knows, each at least once
EVERYTHING = """\
drives:
  d1: {uuid: 11111111-2222-3333-4444-555555555555, type: luks, keyfile: /k, mount: /mnt/a}
repositories:
  main: {path: /srv/borg/main}
targets:
  cloud: {type: cloud-raid, members: [/s/a, /s/b, /s/c], member_size: 1G, keyfile: /k,
          mount: /mnt/c}
  far: {type: nbd, host: h.example.org, export: x, keyfile: /k, mount: /mnt/n}
jobs:
  copy: {kind: mirror, repositories: [main], drive: d1}
  vps:
    kind: pull
    schedule: daily
    destination: /srv/holding
    source: {host: vps.example.org, paths: [/etc]}
  far-copy:
    kind: push
    repositories: [main]
    to: {host: far.example.org, path: /srv/offsite/here}
  far-proof: {kind: restore-test, repositories: [main], push: far-copy}
notify:
  email:
    to: [me@example.org]
    smtp: {host: mail.example.org}
  led:
    colors: {failed: red}
  healthchecks: {url: "https://hc.example.org/ping"}
namespace:
  mounts:
    - {what: "UUID=11111111-2222-3333-4444-555555555556", where: /srv}
"""


class _AnyKeyfile(reader.SystemHostChecks):
    def keyfile_error(self, path: Path) -> str | None:
        return None


def _pattern(path: str) -> str:
    parts = re.sub(r"\[\d+\]", "[]", path).split(".")
    if parts[0] in ("drives", "repositories", "targets", "jobs") and len(parts) > 1:
        parts[1] = "NAME"
    return ".".join(parts) if path else ""


def test_the_parser_reads_exactly_the_documented_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: set[tuple[str, str]] = set()
    original = fields.FieldMap.get

    def recording(self: fields.FieldMap, key: str) -> object:
        asked.add((_pattern(self.path), key))
        return original(self, key)

    monkeypatch.setattr(fields.FieldMap, "get", recording)
    reader.load(write(tmp_path, EVERYTHING), _AnyKeyfile())
    documented = reference.documented_keys()
    assert asked - documented == set(), "read by the parser, missing from configref"
    assert documented - asked == set(), "listed in configref, never read by the parser"


def test_the_model_holds_the_schemas_defaults(tmp_path: Path) -> None:
    """A file that sets nothing optional: every default the model holds is the one the
    schema declares (and so the one the reference prints)."""
    cfg = reader.load(write(tmp_path, EVERYTHING), _AnyKeyfile())
    drive, target, job = cfg.drive("d1"), cfg.target("far"), cfg.job("copy")
    assert drive.stale_after == schema.DRIVES.default("stale_after")
    assert drive.description == schema.DRIVES.default("description")
    assert target.stale_after == schema.TARGETS.default("stale_after")
    assert target.nbd is not None and target.nbd.user == schema.TARGETS.default("user")
    assert target.nbd.port == schema.TARGETS.default("port")
    assert target.nbd.nbd_port == schema.TARGETS.default("nbd_port")
    raid = cfg.target("cloud").raid
    assert raid is not None and raid.level == schema.TARGETS.default("level")
    assert job.timeout == schema.JOBS.default("timeout", "mirror")
    assert job.on_warning == schema.JOBS.default("on_warning")
    assert job.mail_on_success == schema.JOBS.default("mail_on_success")
    pull = cfg.job("vps").pull
    assert pull is not None and (pull.user, pull.port) == (
        schema.PULL_SOURCE.default("user"), schema.PULL_SOURCE.default("port"))
    to = cfg.job("far-copy").to
    assert to is not None and (to.user, to.port, to.compress, to.bandwidth) == (
        schema.PUSH_TARGET.default("user"), schema.PUSH_TARGET.default("port"),
        schema.PUSH_TARGET.default("compress"), None)
    email = cfg.notify.email
    assert email is not None and email.smtp is not None
    assert email.smtp.port == schema.SMTP.default("port", "starttls") == 587
    assert email.smtp.timeout == schema.SMTP.default("timeout")
    assert email.sender == schema.EMAIL.default("from")
    assert email.retry_every == schema.EMAIL.default("retry_every")
    led = cfg.notify.led
    assert (led.enabled, led.index, led.brightness) == tuple(
        schema.LED.default(k) for k in ("enabled", "index", "brightness"))
    assert led.color("done") == schema.LED_COLORS.default("done")
    assert led.color("failed") == "#ff0000"  # set as "red" in EVERYTHING
    assert cfg.namespace.path == schema.NAMESPACE.default("path")


def test_the_reference_in_docs_is_current() -> None:
    current = (ROOT / "docs" / "config-reference.md").read_text()
    assert current == reference.markdown(), "run `make docs` and commit docs/config-reference.md"
