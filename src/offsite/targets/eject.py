"""Telling a drive to stop before it is unplugged, as `udisksctl power-off` does.

Once offsite is done with a drive (unmounted, locked), the whole disk is flushed
(fsync of the block device: the drive's write cache is emptied), a SCSI disk (USB
mass storage, UAS, SATA through SCSI) is sent SYNCHRONIZE CACHE and START STOP UNIT
(stop), and is then deleted from the system: nothing can write to it any more and the
disk has spun down. The USB device itself stays attached, so that pulling it out is an
event the agent sees (and turns the green "unplug now" off).

Every path comes from the configured UUID and the kernel's sysfs layout, never from
anything the device says about itself (label, model, serial).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from offsite.errors import Fatal

log = logging.getLogger(__name__)

_SCSI_ADDRESS = re.compile(r"^\d+:\d+:\d+:\d+$")  # host:channel:target:lun
_USB_DEVICE = re.compile(r"^\d+-\d+(\.\d+)*$")  # bus-port[.port...]; interfaces have ':'


@dataclass(frozen=True)
class Chain:
    """Where a whole disk sits in sysfs: its own directory, its SCSI device (None: not a
    SCSI disk, e.g. virtio) and the USB device it is plugged in as (None: not USB)."""

    disk: str
    scsi: str | None
    usb: str | None


def chain(disk_sys_path: str) -> Chain:
    """The SCSI and USB devices above a whole disk's resolved sysfs directory (pure: the
    kernel's naming of /sys/devices, e.g. .../usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/
    block/sda)."""
    parts = disk_sys_path.rstrip("/").split("/")
    scsi = usb = None
    if len(parts) >= 3 and parts[-2] == "block" and _SCSI_ADDRESS.match(parts[-3]):
        scsi = "/".join(parts[:-2])
    for i in range(len(parts) - 1, 0, -1):
        if _USB_DEVICE.match(parts[i]):
            usb = "/".join(parts[:i + 1])
            break
    return Chain(disk_sys_path, scsi, usb)


def whole_disk(device: str, sys_root: str = "/sys") -> tuple[str, Path]:
    """(kernel name, resolved sysfs directory) of the whole disk holding device."""
    name = os.path.basename(os.path.realpath(device))
    path = Path(os.path.realpath(f"{sys_root}/class/block/{name}"))
    if (path / "partition").exists():
        path = path.parent
    return path.name, path


def in_use(disk: Path, mountinfo: str) -> list[str]:
    """What still holds the disk or one of its partitions: device-mapper (or md) holders
    and mounts. Empty: nothing does."""
    nodes = [disk, *(p for p in disk.iterdir() if (p / "partition").exists())]
    users = []
    numbers = {}
    for node in nodes:
        users += [f"{node.name} is held by {h.name}" for h in sorted((node / "holders").iterdir())]
        numbers[(node / "dev").read_text().strip()] = node.name
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] in numbers:
            users.append(f"{numbers[fields[2]]} is mounted on {fields[4]}")
    return users


class _SgIoHdr(ctypes.Structure):
    """struct sg_io_hdr (scsi/sg.h)."""

    _fields_ = [("interface_id", ctypes.c_int), ("dxfer_direction", ctypes.c_int),
                ("cmd_len", ctypes.c_ubyte), ("mx_sb_len", ctypes.c_ubyte),
                ("iovec_count", ctypes.c_ushort), ("dxfer_len", ctypes.c_uint),
                ("dxferp", ctypes.c_void_p), ("cmdp", ctypes.c_void_p),
                ("sbp", ctypes.c_void_p), ("timeout", ctypes.c_uint),
                ("flags", ctypes.c_uint), ("pack_id", ctypes.c_int),
                ("usr_ptr", ctypes.c_void_p), ("status", ctypes.c_ubyte),
                ("masked_status", ctypes.c_ubyte), ("msg_status", ctypes.c_ubyte),
                ("sb_len_wr", ctypes.c_ubyte), ("host_status", ctypes.c_ushort),
                ("driver_status", ctypes.c_ushort), ("resid", ctypes.c_int),
                ("duration", ctypes.c_uint), ("info", ctypes.c_uint)]


SG_IO = 0x2285
SG_DXFER_NONE = -1
SYNCHRONIZE_CACHE_10 = bytes([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0])
STOP_UNIT = bytes([0x1B, 0, 0, 0, 0x00, 0])  # START STOP UNIT, START=0: stop


def _scsi(fd: int, cdb: bytes, what: str) -> None:
    """Send one SCSI command without data; raise Fatal when the disk refuses it."""
    command = ctypes.create_string_buffer(cdb, len(cdb))
    sense = ctypes.create_string_buffer(32)
    hdr = _SgIoHdr(interface_id=ord("S"), dxfer_direction=SG_DXFER_NONE, cmd_len=len(cdb),
                   mx_sb_len=len(sense), cmdp=ctypes.addressof(command),
                   sbp=ctypes.addressof(sense), timeout=60_000)
    fcntl.ioctl(fd, SG_IO, hdr)
    if hdr.status or hdr.host_status or hdr.driver_status:
        raise Fatal(f"the disk refused {what} (SCSI status {hdr.status:#x}, host "
                    f"{hdr.host_status:#x}, driver {hdr.driver_status:#x})")


def eject(device: str, what: str, mountinfo: str) -> str:
    """Flush, stop and take out the disk holding device (a /dev/disk/by-uuid path); what
    names it in messages; mountinfo: the mount tables to look in (this process's and the
    backup namespace's). Returns what was done, in words. Refuses (Fatal) while anything
    still uses the disk; a disk that is already gone is nothing to do."""
    if not os.path.exists(device):
        return f"{what} is not attached; nothing to eject"
    name, disk = whole_disk(device)
    users = in_use(disk, mountinfo)
    if users:
        raise Fatal(f"{what} ({name}) is still in use ({'; '.join(users)}); it was not "
                    "stopped: do not unplug it yet")
    links = chain(str(disk))
    fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # the block layer flushes the drive's write cache
        if links.scsi is None:
            return f"{what} ({name}): cache flushed; not a SCSI or USB disk, so left attached"
        _scsi(fd, SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE")
        _scsi(fd, STOP_UNIT, "START STOP UNIT (stop)")
    finally:
        os.close(fd)
    Path(links.scsi, "delete").write_text("1")
    via = f"USB device {os.path.basename(links.usb)}" if links.usb else "SCSI"
    return (f"{what} ({name}, {via}): cache flushed, stopped and taken out of the system: "
            "safe to unplug")
