"""One interface over every kind of target: each kind is a module that provides the
functions of TargetKind, found by the target's type. Nothing outside this package asks
which kind a target is to decide what to call."""

from __future__ import annotations

from typing import Any, Protocol

from offsite.config.model import Target, TargetType
from offsite.targets import assembly, cloudraid, nbd


class TargetKind(Protocol):
    def unit_needs(self, target: Target) -> assembly.UnitNeeds:
        """What the target unit needs (modules, ordering, paths, network)."""
        ...

    def create(self, target: Target) -> str:
        """Write a new, empty target (LUKS and a filesystem); a line to print."""
        ...

    def assemble(self, target: Target) -> dict[str, Any]:
        """Attach and unlock it before a job (the target unit's ExecStart)."""
        ...

    def teardown(self, target: Target) -> None:
        """Lock and detach it after the job (ExecStop)."""
        ...

    def degraded_now(self, target: Target) -> str | None:
        """At the end of a job: why the copy lacks the redundancy it should have."""
        ...

    def status(self, target: Target) -> dict[str, Any]: ...

    def as_text(self, facts: dict[str, Any]) -> str: ...


KINDS: dict[TargetType, TargetKind] = {TargetType.CLOUD_RAID: cloudraid, TargetType.NBD: nbd}


def kind(target: Target) -> TargetKind:
    return KINDS[target.kind]


def assemble(target: Target) -> dict[str, Any]:
    return kind(target).assemble(target)


def teardown(target: Target) -> None:
    kind(target).teardown(target)


def status(target: Target) -> dict[str, Any]:
    return kind(target).status(target)


def as_text(facts: dict[str, Any]) -> str:
    return KINDS[TargetType(facts["kind"])].as_text(facts)
