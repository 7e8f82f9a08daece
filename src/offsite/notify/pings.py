"""Health pings: a healthchecks-style URL per job, told when a run starts and how it ended.

The hooks spool a ping; offsite-outbox.service sends it (the job's own unit has no network).
A ping that cannot be sent is a warning in the journal, never a failed backup; it is tried
again for an hour and then dropped, since a late ping would tell the server a lie about
when things happened.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request

from offsite.config.model import Config, Job
from offsite.notify.transport import DeliveryError

# What each event appends to the job's URL (the healthchecks.io convention).
SUFFIX = {"start": "/start", "success": "", "warning": "", "failed": "/fail", "skipped": "/log",
          "interrupted": "/log"}
MAX_AGE = 3600.0  # seconds after which an unsent ping is dropped


def url_for(cfg: Config, job: Job, event: str) -> str | None:
    """The URL to tell about event (start, success, warning, failed, skipped); None when
    the job has no health check."""
    if job.healthcheck:
        base = job.healthcheck.rstrip("/")
    elif cfg.notify.healthchecks is not None:
        base = f"{cfg.notify.healthchecks.url}/{urllib.parse.quote(job.name, safe='')}"
    else:
        return None
    return base + SUFFIX[event]


def send(url: str, body: str, timeout: float, created: float, now: float | None = None) -> None:
    """POST body to url; DeliveryError if the server did not take it."""
    now = time.time() if now is None else now
    if now - created > MAX_AGE:
        raise DeliveryError(f"not sent for {MAX_AGE / 60:.0f} min; too late to mean anything",
                            give_up=True)
    if not url.startswith(("http://", "https://")):  # the config allows nothing else
        raise DeliveryError(f"{url!r} is not an http(s) URL", give_up=True)
    request = urllib.request.Request(url, data=body.encode()[:10_000], method="POST",  # noqa: S310
                                     headers={"User-Agent": "offsite"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(1024)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"the server answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(str(getattr(exc, "reason", exc))) from exc
