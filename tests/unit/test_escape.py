"""Our escaping against the real systemd-escape, on names people and attackers write."""

from __future__ import annotations

import pytest

from offsite import escape
from offsite.run import run

NAMES = [
    "nightly", "with space", "unicodé", "50%", "$HOME", "-leading", "a.b_c:d", ".hidden",
    "tab\there", "back\\slash", "a/b/c", "日本語", "x" * 100, "emoji 💾", "semi;colon", "'quote\"",
]
PATHS = ["/", "/dev/disk/by-uuid/11111111-2222-3333-4444-555555555555", "/mnt/off site",
         "//double//slash/", "/a/./b", "/.dot/dir"]


@pytest.mark.parametrize("name", NAMES)
def test_escape_name_matches_systemd_escape(name: str) -> None:
    expected = run(["systemd-escape", "--", name]).stdout.rstrip("\n")
    assert escape.escape_name(name) == expected


@pytest.mark.parametrize("path", PATHS)
def test_escape_path_matches_systemd_escape(path: str) -> None:
    expected = run(["systemd-escape", "--path", "--", path]).stdout.rstrip("\n")
    assert escape.escape_path(path) == expected


@pytest.mark.parametrize("name", NAMES)
def test_escaped_names_round_trip_through_unescape(name: str) -> None:
    unescaped = run(["systemd-escape", "--unescape", "--", escape.escape_name(name)]).stdout
    assert unescaped.rstrip("\n") == name.replace("/", "/")


def test_uuid_device_unit() -> None:
    unit = escape.uuid_device_unit("11111111-2222-3333-4444-555555555555")
    assert unit == "dev-disk-by\\x2duuid-11111111\\x2d2222\\x2d3333\\x2d4444\\x2d555555555555.device"


def test_mount_points_keep_non_ascii_names() -> None:
    from offsite.jobs.namespace import unescape_mountinfo

    assert unescape_mountinfo("/mnt/café\\040drive") == "/mnt/café drive"
    assert unescape_mountinfo("/mnt/a\\134b\\011c") == "/mnt/a\\b\tc"
