"""A restore test: extract a random sample of files from the latest archive into a private
temporary directory and compare each with the file it was made from.

A file that differs is fine when the source changed since the archive (its size or mtime
is not what the archive recorded) or is gone; a file that differs while its size and mtime
are as archived means the backup does not hold what it claims: a failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from offsite.errors import Fatal
from offsite.jobs import borgjson
from offsite.jobs.secrets import BorgAccess
from offsite.log import fields
from offsite.run import CommandError, run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    path: str  # as borg stores it: relative to /
    size: int
    mtime: float  # seconds since the epoch


def items(json_lines: str) -> list[Item]:
    """The regular files of `borg list --json-lines` output."""
    found = []
    for line in json_lines.splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        if data.get("type") != "-" or data.get("source"):  # hard links point at another item
            continue
        # borg gives the mtime in local time, without a zone, as datetime.isoformat() does
        mtime = datetime.fromisoformat(data["mtime"]).timestamp()
        found.append(Item(data["path"], int(data["size"]), mtime))
    return found


def sample(candidates: list[Item], n: int) -> list[Item]:
    return random.SystemRandom().sample(candidates, min(n, len(candidates)))


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def judge(item: Item, restored: str, source: Path) -> str:
    """same, changed (the source changed since the archive), gone, or MISMATCH."""
    try:
        st = source.stat()
    except FileNotFoundError:
        return "gone"
    if st.st_size != item.size or abs(st.st_mtime - item.mtime) > 1e-5:
        return "changed"
    return "same" if digest(source) == restored else "MISMATCH"


def test_repository(repo: Path, n: int, job: str, access: BorgAccess | None = None,
                    name: str = "") -> dict[str, int]:
    """Run the test on repo's latest archive; returns how many files were judged what.
    Raises Fatal on a mismatch or when borg cannot extract. access: how borg opens repo."""
    access = access or BorgAccess()

    def borg(*args: str, cwd: Path | None = None) -> str:
        return run(["borg", "--log-json", *args], env=access.env, fd_secret=access.fd_secret,
                   cwd=cwd).stdout

    try:
        archive = borg("list", "--last", "1", "--format", "{archive}{NL}", "--",
                       str(repo)).strip()
        if not archive:
            raise Fatal(f"repository {repo} has no archive to test")
        listing = borg("list", "--json-lines", "--", f"{repo}::{archive}")
    except CommandError as exc:
        refused = borgjson.passphrase_refused(borgjson.msgids_of(exc.stderr), name or str(repo),
                                              access.source)
        if refused is not None:
            raise Fatal(*refused) from exc
        raise Fatal(f"cannot list {repo}: {exc}") from exc
    chosen = sample(items(listing), n)
    if not chosen:
        raise Fatal(f"archive {archive} in {repo} holds no regular file to test")
    log.info("restore test of %s::%s: extracting %d of its files", repo, archive, len(chosen),
             extra=fields(job=job))
    counts: dict[str, int] = {}
    mismatched = []
    with tempfile.TemporaryDirectory(prefix="offsite-restore-") as tmp:
        try:
            borg("extract", "--", f"{repo}::{archive}", *[i.path for i in chosen], cwd=Path(tmp))
        except CommandError as exc:
            refused = borgjson.tam_refused([exc.stderr], name or str(repo), str(repo))
            if refused is not None:
                raise Fatal(*refused) from exc
            raise Fatal(f"borg could not extract from {repo}::{archive}: {exc}") from exc
        for item in chosen:
            restored = Path(tmp) / item.path
            verdict = judge(item, digest(restored), Path("/") / item.path)
            counts[verdict] = counts.get(verdict, 0) + 1
            if verdict == "MISMATCH":
                mismatched.append(item.path)
                log.error("/%s differs from its copy in %s although its size and mtime are as "
                          "archived", item.path, archive, extra=fields(job=job))
            elif verdict != "same":
                log.info("/%s: %s since the archive; not compared", item.path,
                         "changed" if verdict == "changed" else "deleted", extra=fields(job=job))
            os.unlink(restored)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if mismatched:
        raise Fatal(f"restore test of {repo}::{archive}: {len(mismatched)} file(s) differ from "
                    f"their unchanged source: " + ", ".join("/" + p for p in mismatched[:10]))
    log.info("restore test of %s::%s passed: %s", repo, archive, summary, extra=fields(job=job))
    return counts
