"""Where a copy goes besides a plain USB drive, and the block devices under it.

registry (one interface over every target kind) · assembly (names, markers, the assembly plan:
pure) · cloudraid (image files, md, LUKS) · nbd (an SSH tunnel, nbd-client) · blockdev
(loop, dm-crypt, mount helpers) · devices (where a drive appears in /dev) · enroll (a
LUKS drive gets offsite's keyfile).
May import: base, config.
"""
