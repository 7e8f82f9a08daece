"""systemd's side: the unit files offsite writes and the one binding it talks through.

render (pure: unit text from the model) · hardening (each unit's sandboxing, with its
reasons) · syntax (values escaped for unit files) · install (plan, install, uninstall, one
reload) · systemd (the running systemd: D-Bus through dbus-fast, sd_notify through pystemd).
May import: base, config, targets (what a target's unit needs, the tunnel's command line).
"""
