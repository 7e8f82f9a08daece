"""A cloud RAID target: create it, assemble it before a job, tear it down after.

Around a job (from the target unit): loop devices over the member images, an md array
(RAID5, RAID6 or RAID1), LUKS with the target's keyfile. The job mounts the unlocked
device inside the backup namespace, copies, syncs and unmounts; the teardown then locks,
lets a running resync finish (bounded), stops the array and detaches the loops, in that
order, so the sync clients only ever upload files of a cleanly stopped array.

Markers (assembly.py) record each member's generation and the computer that assembled it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from offsite import durable, state
from offsite.config.model import CloudRaid, Target
from offsite.errors import Fatal
from offsite.log import fields
from offsite.run import CommandError, run
from offsite.targets import assembly, blockdev

log = logging.getLogger(__name__)

RESYNC_WAIT = 3000.0  # seconds a teardown waits for a resync before it stops the array
CHUNK = 1024 * 1024


def _raid(target: Target) -> CloudRaid:
    if target.raid is None:
        raise Fatal(f"target {target.name} is not a cloud RAID")
    return target.raid




def unit_needs(target: Target) -> assembly.UnitNeeds:
    raid = _raid(target)
    return assembly.UnitNeeds(
        what=f"cloud RAID{raid.level.value} over {len(raid.members)} folders",
        modules=("loop", "raid456", "raid1", "dm_crypt"),
        why_first=("The member folders (sync clients' folders) must be mounted first.",),
        requires_mounts=raid.members, wants=(), writable=raid.members,
        network=("PrivateNetwork", "yes", "assembling a RAID never uses the network"))


def md_device(target: Target) -> str:
    return f"/dev/md/{assembly.md_name(target)}"


def read_members(target: Target) -> list[assembly.Member]:
    out = []
    for i, folder in enumerate(_raid(target).members):
        marker, problem = None, None
        try:
            marker = assembly.parse_marker(assembly.marker_path(target, folder).read_text())
        except FileNotFoundError:
            problem = "no marker"
        except OSError as exc:
            problem = f"marker unreadable: {exc.strerror}"
        except assembly.MarkerError as exc:
            problem = f"marker damaged: {exc}"
        out.append(assembly.Member(i, folder, assembly.image_path(target, folder).is_file(),
                                  marker, problem))
    return out


def _write_marker(target: Target, folder: Path, marker: assembly.Marker) -> None:
    durable.replace(assembly.marker_path(target, folder), marker.to_json(), mode=0o600)


def _marker(set_id: str, member: int, generation: int, machine: str, status: str,
            size: int) -> assembly.Marker:
    return assembly.Marker(set_id, member, generation, machine, socket.gethostname(), status,
                          time.time(), size)


def _random_image(path: Path, size: int) -> None:
    """A member image of random bytes: no two members alike, nothing for a provider to
    deduplicate or to tell used from unused space by."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            left = size
            while left > 0:
                n = min(CHUNK, left)
                f.write(os.urandom(n))
                left -= n
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    durable.fsync_dir(path.parent)


def _check_folders(target: Target) -> None:
    for folder in _raid(target).members:
        if not folder.is_dir():
            raise Fatal(f"target {target.name}: member folder {folder} does not exist",
                        "is the sync client's folder there (and mounted)?")


# -- md --------------------------------------------------------------------------------


def _sysfs(md: str) -> Path:
    return Path("/sys/block") / Path(os.path.realpath(md)).name / "md"


def _array_members(md: str) -> dict[str, str]:
    """loop device -> its md state (in_sync, spare, faulty, ...) for an assembled array."""
    out = {}
    sysfs = _sysfs(md)
    for dev in sysfs.glob("dev-*"):
        try:
            out["/dev/" + dev.name[4:]] = (dev / "state").read_text().strip()
        except OSError:
            continue
    return out


def _sync_action(md: str) -> str:
    try:
        return (_sysfs(md) / "sync_action").read_text().strip()
    except OSError:
        return "idle"


def _degraded(md: str) -> int:
    try:
        return int((_sysfs(md) / "degraded").read_text().strip())
    except (OSError, ValueError):
        return 0


def _wait_idle(md: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _sync_action(md) not in ("idle", "frozen"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _release_from_udev(loops: list[str]) -> None:
    """udev's incremental assembly (mdadm -I from the md rules) may have claimed the new
    loop devices for an array of its own; wait for udev, then stop any array that holds
    them (it can only be this set's: the loops were attached just now)."""
    run(["udevadm", "settle", "--timeout=30"], check=False)
    holders = set()
    for loop in loops:
        base = Path("/sys/block") / Path(loop).name / "holders"
        holders |= {h.name for h in base.glob("md*")} if base.exists() else set()
    for md in sorted(holders):
        log.info("stopping /dev/%s, which udev assembled on its own from this set's members", md)
        _stop_md(f"/dev/{md}")


def _md_running(md: str) -> bool:
    return os.path.exists(md) and Path(os.path.realpath(md)).exists()


def _stop_md(md: str, attempts: int = 10) -> str:
    """Stop the array; returns mdadm's complaint when it still runs after the attempts.
    Right after the lock, udev probes the array again (its watch sees the device closed
    after writing) and holds it open for a moment: mdadm then says busy."""
    complaint = ""
    for _ in range(attempts):
        if not _md_running(md):
            return ""
        result = run(["mdadm", "--stop", md], check=False)
        if result.returncode == 0:
            return ""
        complaint = result.stderr.strip()
        run(["udevadm", "settle", "--timeout=10"], check=False)
        time.sleep(0.5)
    return (complaint or "mdadm --stop failed") if _md_running(md) else ""


# -- commands --------------------------------------------------------------------------


def create(target: Target) -> str:
    """Make the member images, the array, LUKS and a filesystem; leave it torn down."""
    raid = _raid(target)
    _check_folders(target)
    for folder in raid.members:
        for path in (assembly.image_path(target, folder), assembly.marker_path(target, folder)):
            if path.exists():
                raise Fatal(f"target {target.name}: {path} exists already; refusing to "
                            "overwrite a member", "offsite target status NAME shows the set")
    machine = blockdev.machine_id()
    blockdev.load_modules("loop", f"raid{'456' if raid.level.value != '1' else '1'}", "dm_crypt")
    set_id = secrets.token_hex(16)
    made: list[Path] = []
    loops: list[str] = []
    md = md_device(target)
    try:
        for folder in raid.members:
            image = assembly.image_path(target, folder)
            log.info("writing %s (%d MiB of random data)", image, raid.member_size // 2**20)
            _random_image(image, raid.member_size)
            made.append(image)
            loops.append(blockdev.attach_loop(image))
        run(["mdadm", "--create", md, "--run", "--metadata=1.2", "--bitmap=internal",
             f"--level={raid.level.value}", f"--raid-devices={len(loops)}",
             f"--name={assembly.md_name(target)}", *loops])
        blockdev.luks_format(md, target.keyfile)
        blockdev.luks_open(md, assembly.mapper_name(target), target.keyfile)
        try:
            run(["mkfs.ext4", "-q", "-m", "0", "-L", assembly.md_name(target)[:16],
                 assembly.filesystem_device(target)])
        finally:
            blockdev.luks_close(assembly.mapper_name(target))
        log.info("waiting for the new array's initial sync")
        _wait_idle(md, RESYNC_WAIT)
    except (CommandError, Fatal) as exc:
        blockdev.luks_close(assembly.mapper_name(target))
        _stop_md(md)
        for loop in loops:
            blockdev.detach_loop(loop)
        for image in made:
            image.unlink(missing_ok=True)
        raise Fatal(f"could not create target {target.name}: {exc}") from exc
    complaint = _stop_md(md)
    for loop in loops:
        blockdev.detach_loop(loop)
    for i, folder in enumerate(raid.members):
        _write_marker(target, folder, _marker(set_id, i, 1, machine, "clean", len(loops)))
    state.write(assembly.health_file(target), {"state": "ok", "detail": "created", "created": time.time()})
    if complaint:
        raise Fatal(f"target {target.name} is made, but its array did not stop: {complaint}",
                    f"offsite target disassemble {target.name}")
    size = raid.member_size * (len(raid.members) - raid.tolerance())  # usable
    return (f"target {target.name}: RAID{raid.level.value} over {len(raid.members)} members, "
            f"about {size // 2**20} MiB before LUKS and ext4")


def _note_health(target: Target, **values: Any) -> None:
    state.update(assembly.health_file(target), **values, checked=time.time())


def assemble(target: Target) -> dict[str, Any]:
    """Assemble, unlock; return the runtime record. Degraded is allowed (and recorded)."""
    raid = _raid(target)
    _check_folders(target)
    members = read_members(target)
    machine = blockdev.machine_id()
    the_plan = assembly.plan(raid, members, machine)
    if the_plan.refusal is not None:
        reason = the_plan.refusal.replace("NAME", target.name)
        _note_health(target, state="refused", detail=reason)
        raise Fatal(f"target {target.name} is not assembled: {reason}")
    md = md_device(target)
    if os.path.exists(md) or Path(assembly.filesystem_device(target)).exists():
        log.warning("target %s was still assembled (a crash?); taking it down first",
                    target.name, extra=fields(target=target.name))
        teardown(target)
    loops: dict[int, str] = {}
    try:
        for i in (*the_plan.assemble, *the_plan.add):
            image = assembly.image_path(target, members[i].folder)
            for stale in blockdev.loops_of(image):
                blockdev.detach_loop(stale)
            loops[i] = blockdev.attach_loop(image)
        _release_from_udev(list(loops.values()))
        run(["mdadm", "--assemble", md, "--run", *(loops[i] for i in the_plan.assemble)])
        in_array = _array_members(md)
        for i in (*the_plan.assemble, *the_plan.add):
            if loops[i] in in_array:
                continue
            folder = members[i].folder
            log.warning("member %s is behind the others; adding it back (md resyncs it)",
                        folder, extra=fields(target=target.name))
            if run(["mdadm", md, "--re-add", loops[i]], check=False).returncode != 0:
                run(["mdadm", md, "--add", loops[i]])
        generation = the_plan.generation + 1
        for i in loops:
            _write_marker(target, members[i].folder,
                          _marker(the_plan.set_id, i, generation, machine, "assembled",
                                  the_plan.size))
        blockdev.luks_open(md, assembly.mapper_name(target), target.keyfile)
    except (CommandError, Fatal) as exc:
        blockdev.luks_close(assembly.mapper_name(target))
        _stop_md(md)
        for loop in loops.values():
            blockdev.detach_loop(loop)
        _note_health(target, state="failed", detail=str(exc))
        raise Fatal(f"could not assemble target {target.name}: {exc}") from exc
    degraded = _degraded(md) > 0 or bool(the_plan.missing)
    detail = assembly.describe(the_plan, members)
    record = {"md": os.path.realpath(md), "loops": {str(i): d for i, d in loops.items()},
              "generation": generation, "set": the_plan.set_id, "degraded": degraded,
              "size": the_plan.size,
              "missing": [str(members[i].folder) for i in the_plan.missing],
              "resyncing": [str(members[i].folder) for i in the_plan.add], "detail": detail}
    state.write(assembly.runtime_file(target), record)
    _note_health(target, state="degraded" if degraded else "ok", detail=detail,
                 missing=record["missing"], assembled=time.time())
    if degraded:
        log.warning("target %s is DEGRADED: %s", target.name, detail,
                    extra=fields(target=target.name))
    else:
        log.info("target %s assembled and unlocked (%s)", target.name, detail,
                 extra=fields(target=target.name))
    return record


def teardown(target: Target) -> None:
    """Lock, finish a resync (bounded), stop the array, detach the loops, mark members."""
    raid = _raid(target)
    record = state.read(assembly.runtime_file(target))
    md = md_device(target)
    blockdev.luks_close(assembly.mapper_name(target))
    in_sync: set[int] = set()
    loops = {int(k): v for k, v in record.get("loops", {}).items()
             if isinstance(v, str) and v.startswith("/dev/loop") and k.isdigit()}
    if os.path.exists(md):
        if _sync_action(md) not in ("idle", "frozen"):
            log.info("target %s: waiting for md to finish its resync before stopping",
                     target.name, extra=fields(target=target.name))
            if not _wait_idle(md, RESYNC_WAIT):
                log.warning("target %s: the resync did not finish in %d s; stopping anyway "
                            "(it goes on at the next assembly)", target.name, RESYNC_WAIT)
        states = _array_members(md)
        in_sync = {i for i, loop in loops.items() if "in_sync" in states.get(loop, "")}
        degraded = _degraded(md) > 0
        run(["sync"], check=False)
        complaint = _stop_md(md)
        if complaint:
            raise Fatal(f"could not stop the array of target {target.name}: {complaint}",
                        f"is it still mounted? check: mdadm --detail {md}")
    else:
        degraded = bool(record.get("degraded"))
    for loop in loops.values():
        blockdev.detach_loop(loop)
    for folder in raid.members:  # also loops a crashed run left behind
        for stale in blockdev.loops_of(assembly.image_path(target, folder)):
            blockdev.detach_loop(stale)
    generation = record.get("generation")
    set_id = record.get("set")
    size = record.get("size")
    if isinstance(generation, int) and isinstance(set_id, str) and isinstance(size, int):
        machine = blockdev.machine_id()
        for i in sorted(in_sync):
            _write_marker(target, raid.members[i],
                          _marker(set_id, i, generation + 1, machine, "clean", size))
    missing = (size if isinstance(size, int) else len(raid.members)) - len(in_sync)
    if record:
        _note_health(target, state="degraded" if degraded or missing else "ok",
                     detail=f"{missing} member(s) not in sync"
                     if missing else "all members in sync", disassembled=time.time())
    assembly.runtime_file(target).unlink(missing_ok=True)
    log.info("target %s locked, array stopped, loops detached (%d of %d members in sync)",
             target.name, len(in_sync), len(raid.members), extra=fields(target=target.name))


def degraded_now(target: Target) -> str | None:
    """While assembled, at the end of a job: why the array lacks redundancy, or None. A
    rebuild that is running is waited for (bounded): after it, the copy is whole again."""
    record = state.read(assembly.runtime_file(target))
    md = md_device(target)
    missing = [m for m in record.get("missing", []) if isinstance(m, str)]
    if missing:
        return "missing: " + ", ".join(missing)
    if not os.path.exists(md):
        return None
    if _sync_action(md) not in ("idle", "frozen"):
        log.info("target %s: waiting for md to finish rebuilding (%s)", target.name,
                 ", ".join(record.get("resyncing", [])) or _sync_action(md),
                 extra=fields(target=target.name))
        _wait_idle(md, RESYNC_WAIT)
    if _degraded(md) > 0:
        return f"{_degraded(md)} member(s) not in sync ({_sync_action(md)})"
    return None


def repair(target: Target) -> list[Path]:
    """Write a fresh random image (and a blank marker) for every missing member; the next
    assembly adds it and md rebuilds it."""
    raid = _raid(target)
    _check_folders(target)
    members = read_members(target)
    marked = [m.marker for m in members if m.marker is not None]
    if not marked:
        raise Fatal(f"target {target.name} has no member with a marker", "offsite target create")
    set_id = marked[0].set_id
    size = max(m.size for m in marked)
    machine = blockdev.machine_id()
    made = []
    for m in members[:size]:  # members beyond the set's size join with `grow`
        if m.image:
            continue
        image = assembly.image_path(target, m.folder)
        _random_image(image, raid.member_size)
        _write_marker(target, m.folder, _marker(set_id, m.index, 0, machine, "blank", size))
        made.append(image)
    return made


def grow(target: Target) -> str:
    """Add the members the config lists beyond the set's size: new random images, added
    to the array, reshaped (md keeps the data readable throughout), then LUKS and the
    filesystem grown to the new size; torn down after, like a job's assembly."""
    raid = _raid(target)
    _check_folders(target)
    members = read_members(target)
    the_plan = assembly.plan(raid, members, blockdev.machine_id())
    if the_plan.refusal is not None:
        raise Fatal(f"target {target.name} cannot grow: "
                    + the_plan.refusal.replace("NAME", target.name))
    if not the_plan.new:
        return f"target {target.name}: every member in the config is in the set already"
    if the_plan.degraded:
        raise Fatal(f"target {target.name} is degraded ({assembly.describe(the_plan, members)}); "
                    f"repair it first", f"offsite target repair {target.name}, then a run")
    for i in the_plan.new:
        for path in (assembly.image_path(target, members[i].folder),
                     assembly.marker_path(target, members[i].folder)):
            if path.exists():
                raise Fatal(f"target {target.name}: {path} exists already; refusing to "
                            "overwrite it", "move it away if it is not needed")
    new_size = the_plan.size + len(the_plan.new)
    blockdev.load_modules("loop", f"raid{'456' if raid.level.value != '1' else '1'}", "dm_crypt")
    made = []
    for i in the_plan.new:
        image = assembly.image_path(target, members[i].folder)
        log.info("writing %s (%d MiB of random data)", image, raid.member_size // 2**20)
        _random_image(image, raid.member_size)
        made.append(image)
    added = False
    try:
        record = assemble(target)
    except Fatal:
        for image in made:
            image.unlink(missing_ok=True)
        raise
    md = md_device(target)
    try:
        loops = {i: blockdev.attach_loop(assembly.image_path(target, members[i].folder))
                 for i in the_plan.new}
        record["loops"].update({str(i): d for i, d in loops.items()})
        state.write(assembly.runtime_file(target), record)
        _release_from_udev(list(loops.values()))
        run(["mdadm", md, "--add", *loops.values()])
        added = True
        backup = assembly.health_file(target).with_suffix(".reshape")
        backup.unlink(missing_ok=True)
        args = [f"--raid-devices={new_size}"]
        if raid.level.value != "1":
            args.append(f"--backup-file={backup}")
        run(["mdadm", "--grow", md, *args], timeout=600)
        log.info("target %s: md reshapes onto %d members", target.name, new_size)
        time.sleep(1)
        if not _wait_idle(md, RESYNC_WAIT):
            raise Fatal(f"the reshape of target {target.name} did not finish in "
                        f"{RESYNC_WAIT:g} s", "it goes on; see cat /proc/mdstat")
        mapper = assembly.mapper_name(target)
        run(["cryptsetup", "resize", "--key-file", target.keyfile, "--", mapper])
        run(["e2fsck", "-f", "-p", assembly.filesystem_device(target)], ok_codes=(0, 1))
        run(["resize2fs", assembly.filesystem_device(target)], timeout=3600)
        backup.unlink(missing_ok=True)
        record["size"] = new_size
        state.write(assembly.runtime_file(target), record)
    except CommandError as exc:
        raise Fatal(f"could not grow target {target.name}: {exc}") from exc
    finally:
        teardown(target)
        if not added:  # nothing of the set is on the new images: take them away again
            for image in made:
                image.unlink(missing_ok=True)
    return (f"target {target.name}: grown to {new_size} members, about "
            f"{raid.member_size * (new_size - raid.tolerance(new_size)) // 2**20} MiB before "
            "LUKS and ext4")


def take_over(target: Target) -> int:
    """Mark every member as this computer's (after the other one stopped using it)."""
    members = read_members(target)
    machine = blockdev.machine_id()
    count = 0
    for m in members:
        if m.marker is None:
            continue
        _write_marker(target, m.folder, _marker(m.marker.set_id, m.index, m.marker.generation,
                                                machine, "clean" if m.marker.state != "blank"
                                                else "blank", m.marker.size))
        count += 1
    return count


def status(target: Target) -> dict[str, Any]:
    """Facts for `offsite target status` and `offsite drives`: members and their markers."""
    raid = _raid(target)
    members = read_members(target)
    runtime = state.read(assembly.runtime_file(target))
    rows = []
    for m in members:
        marker = m.marker
        rows.append({"folder": str(m.folder), "image": m.image,
                     "generation": marker.generation if marker else None,
                     "state": marker.state if marker else (m.problem or "no marker"),
                     "host": marker.hostname if marker else None})
    plan_ = assembly.plan(raid, members, blockdev.machine_id())
    return {"name": target.name, "kind": target.kind, "level": raid.level.value,
            "assembled": bool(runtime), "members": rows,
            "plan": {"refusal": plan_.refusal.replace("NAME", target.name) if plan_.refusal
                     else None, "degraded": plan_.degraded,
                     "detail": assembly.describe(plan_, members)},
            "health": state.read(assembly.health_file(target))}


def as_text(facts: dict[str, Any]) -> str:
    lines = [f"target {facts['name']}: cloud RAID{facts['level']}, "
             + ("assembled now" if facts["assembled"] else "not assembled")]
    for row in facts["members"]:
        marker = (f"marker {row['state']}, generation {row['generation']}"
                  if row["generation"] is not None else row["state"])
        lines.append(f"  {row['folder']}: {'image' if row['image'] else 'NO IMAGE'}, {marker}")
    plan_ = facts["plan"]
    if plan_["refusal"]:
        lines.append(f"  would be REFUSED: {plan_['refusal']}")
    elif plan_["degraded"]:
        lines.append(f"  next assembly runs DEGRADED: {plan_['detail']}")
    else:
        lines.append(f"  next assembly: {plan_['detail']}")
    return "\n".join(lines) + "\n"


def dump(facts: dict[str, Any]) -> str:
    return json.dumps(facts, indent=1)
