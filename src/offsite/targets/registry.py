"""One entry point per target action, whatever kind the target is (cloud RAID or NBD)."""

from __future__ import annotations

from typing import Any

from offsite.config.model import Target
from offsite.targets import cloudraid, nbd


def assemble(target: Target) -> dict[str, Any]:
    return cloudraid.assemble(target) if target.raid is not None else nbd.assemble(target)


def teardown(target: Target) -> None:
    if target.raid is not None:
        cloudraid.teardown(target)
    else:
        nbd.teardown(target)


def status(target: Target) -> dict[str, Any]:
    return cloudraid.status(target) if target.raid is not None else nbd.status(target)


def as_text(facts: dict[str, Any]) -> str:
    return cloudraid.as_text(facts) if facts["kind"] == "cloud-raid" else nbd.as_text(facts)
