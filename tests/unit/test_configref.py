"""The configuration reference cannot drift: the keys the parser asks for are the keys the
reference lists, and docs/config-reference.md is what configref generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from offsite.config import reader, reference

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
    original = reader._Map.get

    def recording(self: reader._Map, key: str) -> object:
        asked.add((_pattern(self.path), key))
        return original(self, key)

    monkeypatch.setattr(reader._Map, "get", recording)
    reader.load(write(tmp_path, EVERYTHING), _AnyKeyfile())
    documented = reference.documented_keys()
    assert asked - documented == set(), "read by the parser, missing from configref"
    assert documented - asked == set(), "listed in configref, never read by the parser"


def test_every_model_default_exists() -> None:
    for section in reference.SECTIONS:
        for key in section.keys:
            if key.model:
                assert reference.model_default(key.model), key


def test_the_reference_in_docs_is_current() -> None:
    current = (ROOT / "docs" / "config-reference.md").read_text()
    assert current == reference.markdown(), "run `make docs` and commit docs/config-reference.md"
