"""Where a copy goes besides a plain USB drive, and the block devices under it.

registry (one interface over every target kind) · plan (names, markers, the assembly plan:
pure) · cloudraid (image files, md, LUKS) · nbd (an SSH tunnel, nbd-client) · blockdev
(loop, dm-crypt, mount helpers) · enroll (a LUKS drive gets offsite's keyfile).
May import: base, config.
"""
