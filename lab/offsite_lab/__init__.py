"""offsite's lab: what tries offsite out without being part of it.

The sandbox (a real systemd booted in a private namespace), the demo told in it, the
emulated BlinkStick and the demo's mailbox, and the fault injection the tests use. None of
it is installed by offsite's package; offsite never imports it. It may import offsite.
"""
