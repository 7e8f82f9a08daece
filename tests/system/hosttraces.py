"""What a sandbox could leave on the host, taken before it runs and checked after: only
what carries a sandbox's mark, and a canary in /tmp and /var/tmp."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from offsite_lab import sandbox as sandboxmod


def _digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            out[str(path)] = f"{st.st_mode:o}:{st.st_size}:{st.st_mtime_ns}"
    return out


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


SANDBOX_MARK = "offsite-sandbox"  # in the names of everything a sandbox makes on the host


def traces() -> dict[str, object]:
    """What a sandbox could leave behind on the host, each narrowed to what carries a
    sandbox's own mark (its work directory, its loop images, its udev links to loop
    devices, systemd's cgroups, offsite's units): other processes on the machine may change
    /tmp, /var/log or /etc meanwhile without this changing."""
    def own(path: str) -> list[str]:
        return sorted(n for n in os.listdir(path) if SANDBOX_MARK in n) if os.path.isdir(path) else []

    mounts = sorted(m for m in (line.split()[4] for line in
                                Path("/proc/self/mountinfo").read_text().splitlines())
                    if SANDBOX_MARK in m)
    loops = sorted(
        f"{p.parent.parent.name}:{backing}"
        for p in Path("/sys/block").glob("loop*/loop/backing_file")
        if SANDBOX_MARK in (backing := p.read_text().strip()))
    etc = {k: v for k, v in (_digest_tree(Path("/etc/systemd")) | _digest_tree(Path("/etc/udev"))).items()
           if "offsite" in k or "leaktest" in k}
    sandboxes = [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                 and b"offsite-sandbox.target" in _read(p / "cmdline")]
    cgroup = sandboxmod._host_cgroup2()
    return {
        "tmp": own("/tmp"),
        "var_tmp": own("/var/tmp"),
        "journal": sorted(str(p) for p in Path("/var/log/journal").rglob("*")),
        "etc": hashlib.sha256(json.dumps(etc, sort_keys=True).encode()).hexdigest(),
        "mounts": mounts,
        "loops": loops,
        "dev_disk": [e for e in sandboxmod._tree(Path("/dev/disk")) if "loop" in e],
        "cgroups": [d for d in sandboxmod._dirs(cgroup)
                    if d.rsplit("/", 1)[-1].endswith((".slice", ".scope", ".service", ".mount"))],
        "sandboxes": sandboxes,
    }


class HostTraces:
    """Taken before a sandbox runs; check() after it: nothing of the sandbox's stays, and a
    canary in /tmp and /var/tmp (which a systemd booted on the host's root would empty) is
    still there."""

    def __init__(self) -> None:
        self.canaries = [Path(d) / f"offsite-canary-{os.getpid()}-{time.monotonic_ns()}"
                         for d in ("/tmp", "/var/tmp")]
        for canary in self.canaries:
            canary.write_text("still here")
        self.before = traces()

    def check(self) -> None:
        for canary in self.canaries:
            assert canary.exists(), f"{canary.parent} was emptied"
        after = traces()
        for key, value in self.before.items():
            if isinstance(value, list):
                # what is new since: left by this sandbox (what went away was another run's,
                # cleaning up while this one waited for the sandbox lock)
                left = sorted(set(after[key]) - set(value))  # type: ignore[call-overload]
                assert not left, f"host {key}: left behind {left}"
            else:
                assert after[key] == value, f"host {key} changed: {value} -> {after[key]}"

    def discard(self) -> None:
        for canary in self.canaries:
            canary.unlink(missing_ok=True)
