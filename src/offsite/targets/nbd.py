"""A network block device target: nbd-server on the far side's loopback, reached through
an SSH tunnel that ends in a unix socket under /run/offsite (root only).

The tunnel is its own unit (ssh -N, one key that may only forward to that one port); the
target unit attaches nbd-client to the socket and unlocks LUKS; the job mounts inside the
backup namespace. A dropped tunnel makes the device fail its I/O within TIMEOUT seconds:
the job fails (and mails), nothing hangs, and the next run starts a fresh tunnel.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

from offsite import durable, sshkeys, state, unitnames
from offsite.config.model import NbdRemote, Target
from offsite.errors import Fatal
from offsite.log import fields
from offsite.run import CommandError, run, spawn
from offsite.targets import assembly, blockdev

log = logging.getLogger(__name__)

TIMEOUT = 30  # seconds an NBD request may take before the device fails it
TUNNEL_WAIT = 30.0  # seconds the target unit waits for the tunnel's socket


def _remote(target: Target) -> NbdRemote:
    if target.nbd is None:
        raise Fatal(f"target {target.name} is not a network block device")
    return target.nbd


def unit_needs(target: Target) -> assembly.UnitNeeds:
    tunnel = unitnames.tunnel_unit(target.name)
    return assembly.UnitNeeds(
        what=f"network block device on {_remote(target).host}",
        modules=("nbd", "dm_crypt"),
        why_first=("The SSH tunnel first; Wants=: a tunnel that does not come up is a",
                   "failed assembly, with the reason, not a silently skipped job."),
        requires_mounts=(), wants=(tunnel,), writable=(),
        # nbd-client finds the kernel's nbd netlink family only in the host's namespace
        network=("IPAddressDeny", "any", "the tunnel is a unix socket: no IP traffic from here "
                 "at all"))


def degraded_now(target: Target) -> str | None:
    """An NBD target has no redundancy of its own to lose: the far side's disk is one."""
    return None


def socket_path(target: Target) -> Path:
    return state.RUN_DIR / "tunnels" / f"{target.name}.sock"


def key_dir(target: Target, root: Path = state.STATE_DIR / "ssh") -> Path:
    return root / f"target-{target.name}"


def key_file(target: Target) -> Path:
    return key_dir(target) / "tunnel"




def ssh_argv(target: Target) -> list[str]:
    """The tunnel: no command, no shell, only the forward from the socket to nbd-server."""
    remote = _remote(target)
    pinned = remote.host_key is not None
    return ["/usr/bin/ssh", "-F", "none", "-N", "-i", str(key_file(target)), "-p", str(remote.port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=30",
            "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
            "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
            "-o", "StreamLocalBindMask=0177",
            "-o", f"UserKnownHostsFile={key_dir(target) / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=" + ("yes" if pinned else "accept-new"),
            "-o", "LogLevel=ERROR",
            "-L", f"{socket_path(target)}:127.0.0.1:{remote.nbd_port}",
            "-l", remote.user, "--", remote.host]


def authorized_line(target: Target, public_key: str, allowed_from: str) -> str:
    """The far side's authorized_keys line: this key forwards to nbd-server and nothing else."""
    sshkeys.check_from(allowed_from)
    port = _remote(target).nbd_port
    return (f'restrict,port-forwarding,permitopen="127.0.0.1:{port}",from="{allowed_from}",'
            f'command="/bin/false" {public_key.strip()}')


def ensure_key(target: Target) -> Path:
    remote = _remote(target)
    directory = key_dir(target)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    path = key_file(target)
    if not path.exists():
        sshkeys.make_key(path, f"offsite target {target.name} on {socket.gethostname()}")
    if remote.host_key is not None:
        durable.replace(directory / "known_hosts",
                        sshkeys.known_hosts_entry(remote.host, remote.port, remote.host_key))
    return path


def _listening(path: Path, seconds: float) -> bool:
    """ssh accepts on the tunnel's socket (a file left by an earlier ssh does not count)."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.2)


def _free_device() -> str:
    """An /dev/nbdN nobody uses (size 0 and no client)."""
    for block in sorted(Path("/sys/block").glob("nbd*"), key=lambda p: int(p.name[3:] or 0)):
        try:
            size = int((block / "size").read_text())
        except (OSError, ValueError):
            continue
        if size == 0 and not (block / "pid").exists():
            return f"/dev/{block.name}"
    raise Fatal("no free /dev/nbdN device", "is the nbd module loaded? (modprobe nbd)")


def _connected(device: str) -> bool:
    return run(["nbd-client", "-c", device], check=False).returncode == 0


def assemble(target: Target, unlock: bool = True) -> dict[str, Any]:
    remote = _remote(target)
    sock = socket_path(target)
    if not _listening(sock, TUNNEL_WAIT):
        why = (f"the SSH tunnel to {remote.host} did not come up within {TUNNEL_WAIT:g} s "
               f"(journalctl -u {unitnames.tunnel_unit(target.name)})")
        state.update(assembly.health_file(target), state="failed", detail=why, checked=time.time())
        raise Fatal(f"target {target.name} is not attached: {why}")
    teardown(target)  # whatever a crashed run left
    device = _free_device()
    try:
        run(["nbd-client", "-unix", sock, device, "-name", remote.export,
             "-timeout", str(TIMEOUT)], timeout=TIMEOUT * 2)
        if unlock:
            blockdev.luks_open(device, assembly.mapper_name(target), target.keyfile)
    except (CommandError, Fatal) as exc:
        run(["nbd-client", "-d", device], check=False)
        state.update(assembly.health_file(target), state="failed", detail=str(exc), checked=time.time())
        raise Fatal(f"could not attach target {target.name}: {exc}") from exc
    record = {"device": device}
    state.write(assembly.runtime_file(target), record)
    state.update(assembly.health_file(target), state="ok", detail=f"attached as {device}",
                 assembled=time.time(), checked=time.time())
    log.info("target %s attached (%s over the tunnel) and unlocked", target.name, device,
             extra=fields(target=target.name))
    return record


def create(target: Target) -> str:
    """LUKS and a filesystem on the remote disk, formatted from here (the far side never
    sees the key). Refuses a disk that holds LUKS already."""
    ensure_key(target)
    blockdev.load_modules("nbd", "dm_crypt")
    socket_path(target).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # its own ssh for this once (the tunnel unit stops itself when no target unit needs it)
    tunnel = spawn(ssh_argv(target))
    try:
        record = assemble(target, unlock=False)
        device = str(record["device"])
        try:
            if run(["cryptsetup", "isLuks", "--", device], check=False).returncode == 0:
                raise Fatal(f"the remote disk of target {target.name} holds LUKS already; "
                            "refusing to format it", "to start over, wipe it on the far side")
            blockdev.luks_format(device, target.keyfile)
            blockdev.luks_open(device, assembly.mapper_name(target), target.keyfile)
            run(["mkfs.ext4", "-q", "-m", "0", assembly.filesystem_device(target)])
        finally:
            teardown(target)
    finally:
        tunnel.terminate()
        tunnel.wait(10)
    return f"target {target.name}: LUKS and ext4 written to {_remote(target).export} on " \
           f"{_remote(target).host}"


def teardown(target: Target) -> None:
    """Lock and disconnect; works with the tunnel gone (the device has failed by then)."""
    record = state.read(assembly.runtime_file(target))
    blockdev.luks_close(assembly.mapper_name(target))
    device = record.get("device")
    if isinstance(device, str) and re.fullmatch(r"/dev/nbd[0-9]{1,4}", device):
        if os.path.exists(device):
            run(["nbd-client", "-d", device], check=False)
        log.info("target %s locked and %s disconnected", target.name, device,
                 extra=fields(target=target.name))
    assembly.runtime_file(target).unlink(missing_ok=True)
    state.update(assembly.health_file(target), disassembled=time.time())


def status(target: Target) -> dict[str, Any]:
    remote = _remote(target)
    runtime = state.read(assembly.runtime_file(target))
    return {"name": target.name, "kind": target.kind, "host": remote.host,
            "export": remote.export, "assembled": bool(runtime),
            "device": runtime.get("device"), "tunnel": socket_path(target).exists(),
            "key": key_file(target).exists(), "health": state.read(assembly.health_file(target))}


def as_text(facts: dict[str, Any]) -> str:
    lines = [f"target {facts['name']}: network block device {facts['export']} on "
             f"{facts['host']}, " + ("attached as " + str(facts["device"]) if facts["assembled"]
                                     else "not attached")]
    if not facts["key"]:
        lines.append(f"  no SSH key yet: offsite target key {facts['name']} --from ADDRESS")
    return "\n".join(lines) + "\n"
