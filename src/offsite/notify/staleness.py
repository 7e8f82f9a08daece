"""Silence never passes for success: which drives have gone too long without an off-site
copy, which jobs without a success, and which of those to alert about now. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from offsite.config.model import Config
from offsite.notify.mailtext import Stale

REPEAT = 7 * 86400.0  # an alert that still holds is sent again after this long


@dataclass(frozen=True)
class Watched:
    key: str  # "drive:<uuid>" or "job:<name>"
    what: str  # "drive offsite-a", "job nightly"
    last: float | None  # last copy / last success
    limit: float


def watched(cfg: Config, last_copies: Mapping[str, float | None],
            last_successes: Mapping[str, float | None]) -> list[Watched]:
    """Everything with an age limit: every drive (stale_after has a default), and every job
    that sets stale_after."""
    out = [Watched(f"drive:{d.uuid}", f"drive {d.name}", last_copies.get(d.uuid), d.stale_after)
           for d in cfg.drives]
    out += [Watched(f"job:{j.name}", f"job {j.name}", last_successes.get(j.name), j.stale_after)
            for j in cfg.jobs if j.stale_after is not None]
    return out


def stale(items: list[Watched], since: Mapping[str, float], now: float
          ) -> list[tuple[str, Stale]]:
    """The items older than their limit. One never done counts from when offsite began
    watching it (since), so a new drive is not an alert on day one."""
    out = []
    for item in items:
        start = item.last if item.last is not None else since.get(item.key, now)
        if now - start > item.limit:
            out.append((item.key, Stale(item.what, item.last, since.get(item.key, now),
                                        item.limit)))
    return out


def to_alert(current: list[tuple[str, Stale]], alerted: Mapping[str, float],
             now: float) -> list[tuple[str, Stale]]:
    """Of the stale items (key, item), those not alerted yet, or last alerted REPEAT ago."""
    return [(key, item) for key, item in current
            if key not in alerted or now - alerted[key] >= REPEAT]
