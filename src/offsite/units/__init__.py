"""systemd's side: the unit files offsite writes and the one binding it talks through.

render (pure: unit text from the model) · install (plan, install, uninstall, one reload) ·
systemd (pystemd: the manager, unit properties, sd_notify; the only D-Bus binding).
May import: base, config, targets (the tunnel's command line).
"""
