"""The push job in the sandbox systemd: the off-site copy sent over SSH to a real sshd on
127.0.0.1 (the far side is the sandbox itself), with a key forced to a write-only rsync of
one directory; the far copy always whole, proven by a restore test over a read-only key."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from offsite_lab.sandbox import Sandbox

from offsite import unitnames
from offsite.run import Result

from . import repos
from .records import messages, run_bytes, runs, start
from .servers import T, free_port, start_sshd, wait_for

OFFSITE = str(Path(sys.prefix) / "bin" / "offsite")
CONFIG = "/etc/offsite/offsite.yaml"
REPO = "/srv/borg/main"
DATA = "/srv/data"
TARBALLS = "/srv/backups/tarballs"
FAR = "/srv/far-push"  # the far side's directory for this machine's copies
KEYS = "/var/lib/offsite/ssh/far"


def offsite(box: Sandbox, *args: str, check: bool = True) -> Result:
    return box.run([OFFSITE, "--config", CONFIG, *args], check=check)


def said(box: Sandbox, mark: str) -> Callable[[], bool]:
    """Whether the push job's latest lines have said mark yet."""
    return lambda: any(mark in m for m in messages(box, "far")[-40:])


def host_key(box: Sandbox) -> str:
    return " ".join(box.host_path(f"{T}/host_key.pub").read_text().split(" ")[:2])


def config(port: int, key: str, **to: Any) -> dict[str, Any]:
    return {
        "repositories": {"main": {"path": REPO, **repos.SETTINGS}},
        "jobs": {
            "far": {"kind": "push", "repositories": ["main"], "paths": [TARBALLS],
                    "to": {"host": "127.0.0.1", "port": port, "user": "root", "path": FAR,
                           "host_key": key, **to}},
            "proof": {"kind": "restore-test", "repositories": ["main"], "push": "far",
                      "sample": 10},
        },
    }


def install(box: Sandbox, cfg: dict[str, Any]) -> None:
    box.write(CONFIG, json.dumps(cfg, indent=1))
    offsite(box, "install")


def authorize(box: Sandbox) -> list[str]:
    lines = offsite(box, "ssh-key", "far", "--from", "127.0.0.1").stdout.splitlines()
    box.write(f"{T}/authorized_keys", "\n".join(lines) + "\n", mode=0o600)
    return lines


def borg(box: Sandbox, *args: str) -> Result:
    """borg on the source repository, with the host id offsite's jobs use (where
    uuid.getnode() is random, as in this sandbox, borg would take a killed job's lock for
    another host's and wait for it)."""
    record = box.host_path("/run/offsite/namespace.json")
    host = {"BORG_HOST_ID": json.loads(record.read_text())["borg_host_id"]} \
        if record.exists() else {}
    return repos.borg(box, *args, env=host)


def backup(box: Sandbox, files: int = 20, size: int = 64 * 1024) -> None:
    """New random files in DATA and an archive of them (incompressible: what the push sends
    is what borg stored)."""
    box.run(["mkdir", "-p", DATA])
    stamp = time.time_ns()
    for i in range(files):
        box.write(f"{DATA}/{stamp}-{i}.bin", os.urandom(size))
    borg(box, "create", "--compression=none", "--", f"{REPO}::a{stamp}", DATA)


def far_check(box: Sandbox) -> list[str]:
    """borg check of the copy the far side's DIR/main names, by a borg of its own (the copy
    has the source's repository id); the archives it holds."""
    base = f"/tmp/far-borg-{time.time_ns()}"
    env = {"BORG_BASE_DIR": base}
    repos.borg(box, "check", "--", f"{FAR}/main", env=env)
    names = repos.borg(box, "list", "--short", "--", f"{FAR}/main", env=env).stdout.split()
    box.run(["rm", "-rf", base])
    return names


def archives(box: Sandbox) -> list[str]:
    return borg(box, "list", "--short", "--", REPO).stdout.split()


def trees(box: Sandbox) -> list[str]:
    return sorted(p.name for p in box.host_path(f"{FAR}/main.offsite").iterdir())


def rsh(key: str, port: int, bind: str = "127.0.0.1") -> str:
    return (f"ssh -F none -i {KEYS}/{key} -o BatchMode=yes -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null -o BindAddress={bind} -p {port} -l root")


@pytest.fixture
def far(sandbox: Sandbox) -> Iterator[int]:
    """An encrypted repository with one archive, a directory of tarballs, and the far side:
    a real sshd, and the directory that receives the copies."""
    repos.init(sandbox, REPO)
    backup(sandbox)
    sandbox.run(["mkdir", "-p", TARBALLS, FAR])
    sandbox.write(f"{TARBALLS}/etc.tar.gz", os.urandom(30_000))
    sandbox.write(f"{TARBALLS}/home.tar.gz", os.urandom(50_000))
    yield start_sshd(sandbox)


def test_a_push_sends_a_whole_copy_with_a_key_that_can_only_deliver(sandbox: Sandbox,
                                                                     far: int) -> None:
    port = far
    install(sandbox, config(port, host_key(sandbox)))
    assert not start(sandbox, "far")  # no key yet: the job says what to do
    assert any("offsite ssh-key far --from ADDRESS" in m for m in messages(sandbox, "far")), \
        sandbox.journal(unit=unitnames.job_unit("far"))

    lines = authorize(sandbox)
    assert lines[0].startswith(f'restrict,from="127.0.0.1",command="rrsync -wo {FAR}" ')
    assert lines[1].startswith(f'restrict,from="127.0.0.1",command="rrsync -ro {FAR}" ')
    assert start(sandbox, "far"), messages(sandbox, "far")
    first = trees(sandbox)
    assert len(first) == 1
    link = sandbox.host_path(f"{FAR}/main")
    assert link.is_symlink() and str(link.readlink()) == f"main.offsite/{first[0]}"
    assert far_check(sandbox) == archives(sandbox)
    assert sandbox.host_path(f"{FAR}/files{TARBALLS}/home.tar.gz").read_bytes() == \
        sandbox.host_path(f"{TARBALLS}/home.tar.gz").read_bytes()
    notes = sandbox.host_path(f"{FAR}/offsite-recovery")
    assert (notes / "keys" / "main.key").read_text().startswith("BORG_KEY ")
    assert "main" in (notes / "RECOVERY.txt").read_text()
    assert runs(sandbox, "far")[-1][0] == "success"
    moving = [e for e in sandbox.entries("JOB=far") if "PROGRESS_BYTES" in e]
    assert moving and moving[0]["MESSAGE"].startswith("push: "), moving  # for `offsite run`

    # The next push: a new tree, its unchanged files hard links to the one before (seen in
    # the bytes sent), the switch, and the older tree gone.
    backup(sandbox, files=2)
    sandbox.run(["rm", f"{TARBALLS}/etc.tar.gz"])
    time.sleep(1.1)  # tree names are the push's second
    assert start(sandbox, "far"), messages(sandbox, "far")
    second = trees(sandbox)
    assert len(second) == 1 and second != first
    assert far_check(sandbox) == archives(sandbox)
    assert not sandbox.host_path(f"{FAR}/files{TARBALLS}/etc.tar.gz").exists()
    assert any("unchanged files linked to " + first[0] in m for m in messages(sandbox, "far"))
    full, incremental = run_bytes(sandbox, "far")[-2:]
    print(f"bytes sent: full push {full}, incremental push {incremental} (2 new files of "
          f"{64 * 1024})")
    assert full is not None and incremental is not None
    assert full > 20 * 64 * 1024 and incremental < full / 4

    # The restore test of the far copy: fetched with the read key, checked, sampled.
    assert start(sandbox, "proof"), messages(sandbox, "proof")
    said = messages(sandbox, "proof")
    assert any("passed borg check" in m or "passed:" in m for m in said), said

    # What a thief with the push key can do: deliver into FAR, nothing else.
    key = rsh("push", port)
    sandbox.write("/tmp/evil", "x")
    denied = sandbox.run(["ssh", *key.split()[1:], "127.0.0.1", "cat", "/etc/shadow"],
                         check=False)
    assert denied.returncode != 0 and "root:" not in denied.stdout, denied
    for source in ("127.0.0.1:main/config", "127.0.0.1:/", "127.0.0.1:/etc/passwd"):
        sandbox.run(["rm", "-rf", "/tmp/got"])
        stolen = sandbox.run(["rsync", "-a", "-e", key, source, "/tmp/got"], check=False)
        assert stolen.returncode != 0 and not sandbox.host_path("/tmp/got").exists(), stolen
    # a path outside: refused, or it lands inside FAR (rrsync roots every path there)
    for dest in ("127.0.0.1:../evil", "127.0.0.1:/../evil", "127.0.0.1:/etc/evil"):
        sandbox.run(["rsync", "-e", key, "/tmp/evil", dest], check=False)
    assert not sandbox.host_path("/srv/evil").exists()
    assert not sandbox.host_path("/etc/evil").exists()
    # a symlink planted to the outside, then written through: refused
    sandbox.run(["mkdir", "-p", "/tmp/plant", "/tmp/outside"])
    sandbox.run(["ln", "-sfn", "/tmp/outside", "/tmp/plant/door"])
    sandbox.run(["rsync", "-l", "-e", key, "/tmp/plant/door", "127.0.0.1:"], check=False)
    through = sandbox.run(["rsync", "-e", key, "/tmp/evil", "127.0.0.1:door/evil"], check=False)
    assert through.returncode != 0 and not sandbox.host_path("/tmp/outside/evil").exists()
    # the key is good only from the address it was given for
    other = sandbox.run(["rsync", "-e", rsh("push", port, bind="127.0.0.2"), "/tmp/evil",
                         "127.0.0.1:x"], check=False)
    assert other.returncode != 0 and not sandbox.host_path(f"{FAR}/x").exists()
    # the read key reads, and cannot write
    wrote = sandbox.run(["rsync", "-e", rsh("read", port), "/tmp/evil", "127.0.0.1:y"],
                        check=False)
    assert wrote.returncode != 0 and not sandbox.host_path(f"{FAR}/y").exists()
    # and the copy is still whole after all that
    assert far_check(sandbox) == archives(sandbox)

    # `offsite drives` lists the far side with its last push
    listed = offsite(sandbox, "drives").stdout
    assert f"push to 127.0.0.1:{FAR}" in listed and "ok" in listed, listed

    # Rot on the far side (a byte changed, size and mtime kept): the restore test of the far
    # copy fails, naming borg check.
    segment = max((p for p in sandbox.host_path(f"{FAR}/main/data").rglob("*")
                   if p.name.isdigit() and p.is_file()), key=lambda p: p.stat().st_size)
    stat = segment.stat()
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    os.utime(segment, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not start(sandbox, "proof")
    result, detail = runs(sandbox, "proof")[-1]
    assert result == "failed" and "borg check of the copy of main that far pushed" in detail, \
        detail


def test_a_push_killed_or_cut_off_at_random_points_leaves_a_whole_copy(sandbox: Sandbox,
                                                                        far: int) -> None:
    """The transfer killed (SIGKILL to every process of the job), or the connection cut (the
    far side's sshd stopped, its sessions with it), at random moments of pushes that carry
    new archives, prune and compact: the far side's DIR/main is at every moment the previous
    complete copy or the new one, passing borg check; the next push completes."""
    port = far
    install(sandbox, config(port, host_key(sandbox), bandwidth="1M"))
    authorize(sandbox)
    assert start(sandbox, "far"), messages(sandbox, "far")
    complete = archives(sandbox)
    unit = unitnames.job_unit("far")
    # how long a push of one round's new data takes, uncut: the random points span it
    backup(sandbox, files=16, size=128 * 1024)  # 2 MiB: 2 s at the 1 MiB/s limit
    began = time.monotonic()
    assert start(sandbox, "far"), messages(sandbox, "far")
    took = time.monotonic() - began
    complete = archives(sandbox)
    chooser = random.SystemRandom()
    # random moments, and marks: as the marker is sent, the switch, and just after it
    moments: list[float | str] = [chooser.uniform(0.1, took + 0.3) for _ in range(8)]
    moments[3:3] = ["its completion marker next", "to the new copy", "now names the copy in"]
    seen: list[str] = []
    for n, moment in enumerate(moments):
        backup(sandbox, files=16, size=128 * 1024)
        if n % 3 == 2:
            borg(sandbox, "prune", "--keep-last=2", "--", REPO)
            borg(sandbox, "compact", "--", REPO)
        how = "killed" if n % 2 == 0 else "cut"
        sandbox.systemctl("start", "--no-block", "--", unit)
        if isinstance(moment, float):
            time.sleep(moment)
            when = f"at {moment:.2f} s"
        else:
            wait_for(f"the push to say {moment!r}", said(sandbox, moment), took * 3 + 30)
            when = f"when it said {moment!r}"
        if how == "killed":
            sandbox.systemctl("kill", "--signal=SIGKILL", "--", unit, check=False)
        else:
            sandbox.systemctl("stop", "test-sshd.service")
        sandbox.wait_for_state(unit, ["inactive", "failed"], 60)
        if how == "cut":
            start_sshd(sandbox, port=port)
        # the far side's rsync of a killed push ends when its connection does
        wait_for("the far side's sessions to end",
                 lambda: len(sandbox.processes("test-sshd.service")) == 1, 30)
        result, detail = runs(sandbox, "far")[-1]
        far_has = far_check(sandbox)
        now = archives(sandbox)
        assert far_has in (complete, now), (how, when, far_has)
        which = "previous" if far_has == complete != now else "new"
        complete = far_has
        if how == "cut" and result == "failed" and which == "previous":
            assert "was lost mid-transfer" in detail or "cannot reach" in detail, detail
        seen.append(f"{how} {when}: {result}, the far side holds the {which} copy")
    print(f"an uncut push of the same size took {took:.1f} s;", *seen, sep="\n")
    assert start(sandbox, "far"), messages(sandbox, "far")
    assert far_check(sandbox) == archives(sandbox)
    assert len(trees(sandbox)) == 1


def test_what_stops_a_push_is_named_and_the_far_copy_stays(sandbox: Sandbox, far: int) -> None:
    """An unreachable far side, a changed host key, a key the far side refuses, and a full
    far disk: each ends the push with a reason that says which; the copy there stays."""
    port = far
    # the far directory on a small filesystem of its own (in the sandbox's mounts only)
    sandbox.run(["mount", "-t", "tmpfs", "-o", "size=12m", "offsite-test-far", FAR])
    install(sandbox, config(port, host_key(sandbox)))
    authorize(sandbox)
    assert start(sandbox, "far"), messages(sandbox, "far")
    complete = archives(sandbox)

    def refused(cfg: dict[str, Any], expected: str) -> str:
        install(sandbox, cfg)
        assert not start(sandbox, "far")
        result, detail = runs(sandbox, "far")[-1]
        assert result == "failed" and expected in detail, detail
        assert far_check(sandbox) == complete
        return detail

    backup(sandbox, files=4)
    why = [refused(config(free_port(), host_key(sandbox)), "cannot reach 127.0.0.1 port")]
    sandbox.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/tmp/other_host_key"])
    other = " ".join(sandbox.host_path("/tmp/other_host_key.pub").read_text().split()[:2])
    why.append(refused(config(port, other), "host key is not the one this job knows"))
    sandbox.write(f"{T}/authorized_keys", "", mode=0o600)
    why.append(refused(config(port, host_key(sandbox)), "refused the job's key"))
    authorize(sandbox)
    backup(sandbox, files=200)  # 12.5 MiB more: it does not fit
    why.append(refused(config(port, host_key(sandbox)), "the far side is full"))
    print(*why, sep="\n")
    # a far side with room (and without the copies: this side's record names a tree that
    # is gone there): the next push sends a whole new copy
    sandbox.run(["umount", FAR])
    assert start(sandbox, "far"), messages(sandbox, "far")
    assert far_check(sandbox) == archives(sandbox)
