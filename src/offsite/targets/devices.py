"""Where a drive appears in /dev: from its configured UUID only (validated to hex and
dashes), never from anything the device says about itself."""

from __future__ import annotations

from offsite.config.model import Drive, DriveType


def mapper_name(drive: Drive) -> str:
    # From the UUID, which validation fixed to hex and dashes: safe for device-mapper.
    return f"offsite-{drive.uuid}"


def drive_device(drive: Drive) -> str:
    return f"/dev/disk/by-uuid/{drive.uuid}"


def filesystem_device(drive: Drive) -> str:
    """The block device holding the drive's filesystem (after unlocking, for LUKS)."""
    if drive.type is DriveType.LUKS:
        return f"/dev/mapper/{mapper_name(drive)}"
    return drive_device(drive)
