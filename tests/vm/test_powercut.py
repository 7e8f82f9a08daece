"""A power cut at any write (issue #19): the drive's LUKS container sits on dm-log-writes,
which records every write the drive receives, and every flush, in the order they
completed. A first copy, then (after prune and compact) an incremental copy go to it as a
plugged drive; then the log is replayed onto a blank disk and, at every flush, FUA write
and mark, the drive is looked at as a machine would after a power cut there (on a
throwaway snapshot): the filesystem mounts and e2fsck finds nothing, the repository path
names the previous complete copy or the new one (or nothing, before the first copy
finished), each passing borg check, and no tree holds a completion marker beside a
partial copy. The replayer is tests/vm/logwrites.py."""

from __future__ import annotations

import json
from pathlib import Path

from .guest import Guest
from .test_luks import (
    CONFIG,
    COPY_PROCESS,
    REPO,
    blank,
    encrypted_repository,
    enroll,
    format_luks,
    one_drive_config,
    remove_when_locked,
    runs,
)

LOG = "offsite-test-log"
DRIVE = "offsite-test-drive"
OFFSET = 8192  # sectors: the drive starts here, so the logged device shows no signature
REPLAYER = "/root/logwrites.py"
PASS = "/root/d6.pass"  # written by format_luks

# Marks around the swap of each copy, set by a watcher in the guest: the copy (not borg
# with-lock) is stopped when its new tree's completion marker exists, a mark is set, it
# goes on; the same once the repository path names the new tree.
WATCH = """
n=$1
for i in $(seq 6000); do
  pid=$(pgrep -f 'COPY_PROCESS' | head -1)
  if [ -n "$pid" ]; then
    for m in /proc/$pid/root/mnt/offsite/main.offsite/*/offsite-mirror.json; do
      if [ -e "$m" ] && [ "$(readlink -f /proc/$pid/root/mnt/offsite/main)" != "$(dirname "$m")" ]
      then kill -STOP $pid; dmsetup message LOG_DEVICE 0 mark marker-$n; kill -CONT $pid
           before=$(readlink /proc/$pid/root/mnt/offsite/main); break 2; fi
    done
  fi
  sleep 0.02
done
for i in $(seq 6000); do
  kill -0 $pid 2>/dev/null || exit 0
  now=$(readlink /proc/$pid/root/mnt/offsite/main)
  if [ "$now" != "$before" ]; then
    kill -STOP $pid; dmsetup message LOG_DEVICE 0 mark swapped-$n; kill -CONT $pid; exit 0; fi
  sleep 0.02
done
""".replace("LOG_DEVICE", LOG).replace("COPY_PROCESS", COPY_PROCESS)


def _device(g: Guest, node: str) -> str:
    return g.run(["readlink", "-f", f"/dev/disk/by-id/virtio-{node}"]).stdout.strip()


def _plug(g: Guest) -> None:
    """The drive appears, as a USB drive's device would: the device past OFFSET."""
    sectors = int(g.run(["blockdev", "--getsz", f"/dev/mapper/{LOG}"]).stdout) - OFFSET
    g.run(["dmsetup", "create", DRIVE, "--table", f"0 {sectors} linear /dev/mapper/{LOG} {OFFSET}"])
    g.run(["udevadm", "settle"])


def _unplug(g: Guest, uuid: str) -> None:
    remove_when_locked(g, uuid, DRIVE)


def _mark(g: Guest, name: str) -> None:
    g.run(["dmsetup", "message", LOG, "0", "mark", name])


def _copy(g: Guest, uuid: str, n: int) -> None:
    """Plug, copy with the watcher setting marks around the swap, wait for the lock, unplug."""
    g.write("/root/watch.sh", WATCH, mode=0o755)
    g.run(["sh", "-c", f"setsid /root/watch.sh {n} >/root/watch-{n}.log 2>&1 </dev/null &"])
    _mark(g, f"copy-{n}")
    _plug(g)
    g.wait_until(f"copy {n}", lambda: runs(g).count(("copy", "success")) == n, 900)
    _unplug(g, uuid)
    _mark(g, f"copy-{n}-done")


def test_a_copy_survives_a_power_cut_at_every_flush(guest: Guest, tmp_path: Path) -> None:
    g = guest
    g.run(["modprobe", "dm-log-writes"])
    g.run(["modprobe", "dm-snapshot"])
    g.plug(blank(tmp_path / "d6.img", 96), "d6")
    g.plug(blank(tmp_path / "log.img", 768), "d6log")
    g.plug(blank(tmp_path / "replay.img", 96), "d6replay")
    g.plug(blank(tmp_path / "cow.img", 64), "d6cow")
    g.run(["udevadm", "settle"])
    data, log, replay, cow = (_device(g, n) for n in ("d6", "d6log", "d6replay", "d6cow"))
    sectors = g.run(["blockdev", "--getsz", data]).stdout.strip()
    g.run(["dmsetup", "create", LOG, "--table", f"0 {sectors} log-writes {data} {log}"])

    # bought and set up: LUKS2 with an ext4 inside, then enrolled
    _plug(g)
    format_luks(g, f"/dev/mapper/{DRIVE}", "d6", "a passphrase")
    uuid = enroll(g, f"/dev/mapper/{DRIVE}", "d6")
    g.run(["dmsetup", "remove", "--retry", DRIVE])

    repository = encrypted_repository(g)
    borg = ". /root/.borg-env && "
    g.run(["sh", "-c", f"{borg} head -c 1500000 /dev/urandom > /srv/one && "
           f"borg create {REPO}::one /srv/one"], timeout=600)
    g.write(CONFIG, one_drive_config("d6", uuid, repository))
    g.run(["offsite", "--config", CONFIG, "install"], timeout=600)

    _copy(g, uuid, 1)
    # a new archive, the first one pruned and the space compacted: segments go and come
    g.run(["sh", "-c", f"{borg} head -c 1500000 /dev/urandom > /srv/two && "
           f"borg create {REPO}::two /srv/two && borg prune --keep-last 1 {REPO} && "
           f"borg compact {REPO}"], timeout=600)
    _copy(g, uuid, 2)
    watched = g.run(["sh", "-c", "cat /root/watch-*.log"]).stdout
    g.run(["dmsetup", "remove", "--retry", LOG])
    g.run(["offsite", "--config", CONFIG, "uninstall"], timeout=600)  # nothing reacts now

    # the drive as it really is after both copies, for the replay to match
    size = int(sectors) - OFFSET
    g.run(["dmsetup", "create", DRIVE, "--table", f"0 {size} linear {data} {OFFSET}"])
    g.run(["cryptsetup", "open", "--readonly", "--key-file", PASS, f"/dev/mapper/{DRIVE}", "d6"])
    g.run(["mkdir", "-p", "/mnt/d6"])
    g.run(["mount", "-o", "ro", "/dev/mapper/d6", "/mnt/d6"])
    g.write(REPLAYER, Path(__file__).with_name("logwrites.py").read_text())
    real = g.run(["python3", "-c", "import sys, pathlib; sys.path.insert(0, '/root'); "
                  "import logwrites; print(logwrites.tree_digest(pathlib.Path('/mnt/d6/main')))"])
    g.run(["umount", "/mnt/d6"])
    g.run(["cryptsetup", "close", "d6"])
    g.run(["dmsetup", "remove", "--retry", DRIVE])

    out = g.run(["sh", "-c", f"{borg} python3 {REPLAYER} --log {log} --target {replay} "
                 f"--cow {cow} --shift {OFFSET} --keyfile {PASS} --name main "
                 "--from-mark copy-1"], timeout=3600).stdout
    (tmp_path / "replay.jsonl").write_text(out)  # every point, kept with the test's files
    lines = [json.loads(line) for line in out.splitlines()]
    points, checked = lines[:-1], lines[-1]["borg_check"]
    by_mark = {p["mark"]: p for p in points if p["mark"]}
    first, second = by_mark["copy-1-done"]["digest"], by_mark["copy-2-done"]["digest"]
    print(f"{len(points)} replay points checked ({sum(1 for p in points if p['mark'])} marks: "
          f"{', '.join(by_mark)}); borg check of {len(checked)} distinct copies; "
          f"watcher: {watched.strip()!r}")
    assert second == real.stdout.strip(), "the replay does not end where the drive is"
    assert first and second and first != second
    assert len(points) >= 20, points
    seen_copy = False
    for p in points:
        where = p["what"]
        assert "mount" not in p, (where, p["mount"])
        assert p["fsck"] == 0, (where, p.get("fsck_said"))
        assert p["names"] not in ("dangling", "plain"), (where, p)
        assert p["digest"] in (None, first, second), (where, "names a partial copy", p)
        if seen_copy:
            assert p["digest"] is not None, (where, "a complete copy was lost")
        seen_copy = seen_copy or p["digest"] is not None
        for tree, digest in p["marked"].items():
            assert digest in (first, second), (where, f"a marker beside a partial copy: {tree}",
                                              json.dumps(p))
    assert all(code == 0 for code in checked.values()), lines[-1]
    assert {first, second} <= set(checked)
    during = points[points.index(by_mark["copy-2"]):points.index(by_mark["copy-2-done"])]
    assert {p["digest"] for p in during} == {first, second}  # the old copy, then the new
