"""offsite: a systemd-integrated backup agent."""

__version__ = "0.1.0"
