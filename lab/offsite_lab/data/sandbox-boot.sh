#!/bin/sh
# Boots a real systemd as PID 1 of the private PID + mount namespace this script runs in
# (started as: unshare --pid --mount --fork --mount-proc sh sandbox-boot.sh WORKDIR).
#
# systemd's boot services act on the root filesystem they see (tmpfiles empties /tmp,
# units land in /etc, the journal writes to /var/log), so it boots on a copy-on-write
# overlay of the host root held in a tmpfs: whatever it writes vanishes with it.
set -eu
W=$1
shift  # the rest: host directories to show inside at the same path, read-only; or
       # HOST=INSIDE: a host directory shown writable at INSIDE (state kept across boots)
mount --make-rprivate /
mount -t tmpfs -o size=4G,mode=0700 offsite-sandbox "$W"
mkdir -p "$W/upper" "$W/work" "$W/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$W/root"
R=$W/root
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
umount -R "$R/sys/fs/cgroup"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
# The overlay shows only the root filesystem; offsite's own tree and virtualenv may live on
# another one (or under /tmp, now hidden), so they are bound in, read-only.
for dir in "$@"; do
  case $dir in
    *=*)
      mkdir -p "$R${dir#*=}"
      mount --bind "${dir%%=*}" "$R${dir#*=}" ;;
    *)
      mkdir -p "$R$dir"
      mount --rbind "$dir" "$R$dir"
      mount -o remount,bind,ro "$R$dir" ;;
  esac
done

# Keep host-wide actions out: no coldplug of every device of the host, no renaming of
# network interfaces, and a small boot target instead of everything the host enables.
ln -sf /dev/null "$R/etc/systemd/system/systemd-udev-trigger.service"
# binfmt_misc is one table for the whole machine: systemd-binfmt would register the
# binfmt.d entries of the host's packages into it at boot and, stopped at teardown,
# unregister every entry the host has (qemu-user's too).
for unit in systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
            proc-sys-fs-binfmt_misc.mount; do
  ln -sf /dev/null "$R/etc/systemd/system/$unit"
done
mkdir -p "$R/etc/udev/rules.d"
ln -sf /dev/null "$R/etc/udev/rules.d/80-net-setup-link.rules"
cat > "$R/etc/systemd/system/offsite-sandbox.target" <<'UNIT'
[Unit]
Description=offsite test sandbox
Requires=basic.target
Wants=dbus.service systemd-udevd.service systemd-journald.service
After=basic.target dbus.service systemd-udevd.service
AllowIsolate=yes
UNIT

mkdir -p "$R/.oldroot"
cd "$R"
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
# Shared, as systemd makes / on a booted machine: systemd 252 sets up a unit's credentials
# (LoadCredential=) in a helper's mount namespace and relies on that mount propagating
# back; on a private tree $CREDENTIALS_DIRECTORY stays empty. This namespace was made
# private from the host's above, so nothing propagates out of the sandbox.
mount --make-rshared /
export container=offsite-sandbox
exec /lib/systemd/systemd --system --unit=offsite-sandbox.target --log-target=journal-or-kmsg --log-level=info
