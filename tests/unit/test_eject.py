"""Where a disk sits (its SCSI and USB devices, from the kernel's sysfs layout), and what
still holds it: the parts of eject that do not talk to a disk (tests/vm/test_usb.py does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from offsite.targets.eject import Chain, chain, in_use

USB = "/sys/devices/pci0000:00/0000:00:04.0/usb2/2-1"
SCSI = f"{USB}/2-1:1.0/host2/target2:0:0/2:0:0:0"


@pytest.mark.parametrize(("path", "expected"), [
    (f"{SCSI}/block/sda", Chain(f"{SCSI}/block/sda", SCSI, USB)),
    # behind a hub: the device the disk is (2-1.4), not the hub (2-1)
    (f"{USB}/2-1.4/2-1.4:1.0/host3/target3:0:0/3:0:0:0/block/sdb",
     Chain(f"{USB}/2-1.4/2-1.4:1.0/host3/target3:0:0/3:0:0:0/block/sdb",
           f"{USB}/2-1.4/2-1.4:1.0/host3/target3:0:0/3:0:0:0", f"{USB}/2-1.4")),
    # a SATA disk: SCSI, not USB
    ("/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
     Chain("/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
           "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0", None)),
    # virtio and loop: neither
    ("/sys/devices/pci0000:00/0000:00:06.0/virtio3/block/vdb",
     Chain("/sys/devices/pci0000:00/0000:00:06.0/virtio3/block/vdb", None, None)),
    ("/sys/devices/virtual/block/loop0", Chain("/sys/devices/virtual/block/loop0", None, None)),
])
def test_the_scsi_and_usb_devices_above_a_disk(path: str, expected: Chain) -> None:
    assert chain(path) == expected


def _disk(root: Path, partitions: dict[str, list[str]], holders: list[str]) -> Path:
    disk = root / "sda"
    (disk / "holders").mkdir(parents=True)
    (disk / "dev").write_text("8:0\n")
    for h in holders:
        (disk / "holders" / h).touch()
    for i, (name, held_by) in enumerate(partitions.items(), 1):
        (disk / name / "holders").mkdir(parents=True)
        (disk / name / "partition").write_text(f"{i}\n")
        (disk / name / "dev").write_text(f"8:{i}\n")
        for h in held_by:
            (disk / name / "holders" / h).touch()
    (disk / "queue").mkdir()  # not a partition: ignored
    return disk


MOUNTINFO = ("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
             "90 22 8:2 / /media/data rw,relatime shared:40 - ext4 /dev/sda2 rw\n")


def test_nothing_holds_a_disk_whose_partitions_are_free(tmp_path: Path) -> None:
    disk = _disk(tmp_path, {"sda1": []}, [])
    assert in_use(disk, MOUNTINFO) == []


def test_a_mapping_or_a_mount_of_any_partition_holds_the_disk(tmp_path: Path) -> None:
    disk = _disk(tmp_path, {"sda1": ["dm-3"], "sda2": []}, [])
    assert in_use(disk, MOUNTINFO) == ["sda1 is held by dm-3", "sda2 is mounted on /media/data"]


def test_a_mapping_on_the_whole_disk_holds_it(tmp_path: Path) -> None:
    disk = _disk(tmp_path, {}, ["dm-0"])
    assert in_use(disk, "") == ["sda is held by dm-0"]
