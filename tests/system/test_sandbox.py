"""The sandbox itself: a real systemd boots, sees plugged drives, and leaves the host alone."""

from __future__ import annotations

import json
import secrets
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from offsite_lab import sandbox as sandboxmod

from offsite import escape
from offsite.errors import Fatal
from offsite.run import run, spawn

from .hosttraces import HostTraces, traces

ROOT = Path(__file__).resolve().parents[2]
UUID = "11111111-2222-3333-4444-555555555555"


def plug_unit(uuid: str, message: str) -> str:
    device = escape.uuid_device_unit(uuid)
    return textwrap.dedent(f"""\
        [Unit]
        Description=runs when the test drive is plugged
        BindsTo={device}
        After={device}

        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/echo {message}

        [Install]
        WantedBy={device}
        """)


def test_drive_plug_starts_wanted_unit(sandbox: sandboxmod.Sandbox) -> None:
    image = sandbox.make_drive("plugtest", UUID, label="TESTDRIVE")
    sandbox.install_unit("plugtest.service", plug_unit(UUID, "drive-was-plugged"), enable=True)
    assert sandbox.show("plugtest.service", "ActiveState") == "inactive"

    device = sandbox.plug(image)
    assert device.startswith("/dev/loop")
    sandbox.wait_for_state("plugtest.service", ["active"])
    assert "drive-was-plugged" in sandbox.journal(unit="plugtest.service")
    device_unit = escape.uuid_device_unit(UUID)
    assert sandbox.show(device_unit, "SubState") == "plugged"
    listed = sandbox.systemctl("list-units", "--plain", "--no-legend", "plugtest.service").stdout
    assert "plugtest.service" in listed and "active" in listed

    sandbox.unplug(device)
    # BindsTo= the device: pulling the drive stops the unit.
    sandbox.wait_for_state("plugtest.service", ["inactive"])
    sandbox.wait_for_state(device_unit, ["inactive"])


def test_systemd_run_and_dbus_inside(sandbox: sandboxmod.Sandbox) -> None:
    result = sandbox.systemd_run(["sh", "-c", "echo $INVOCATION_ID; cat /proc/1/comm"])
    invocation, comm = result.stdout.split()
    assert len(invocation) == 32 and comm == "systemd"
    # The sandbox's own system bus answers from the host through its socket path.
    reply = run(["busctl", f"--address={sandbox.bus_address}", "get-property",
                 "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                 "org.freedesktop.systemd1.Manager", "SystemState"]).stdout
    assert reply.strip() == 's "running"'


def test_structured_log_fields_reach_the_journal(sandbox: sandboxmod.Sandbox) -> None:
    code = (
        "import logging\n"
        "from offsite import log\n"
        "log.setup()\n"
        "logging.getLogger('offsite.test').warning('copy finished', "
        "extra=log.fields(job='nightly', drive='offsite-a'))\n"
    )
    sandbox.systemd_run([sys.executable, "-c", code],
                        properties=[f"Environment=PYTHONPATH={ROOT / 'src'}"], pipe=False)
    entries = sandbox.run(["journalctl", "--no-pager", "-o", "json", "JOB=nightly"]).stdout
    records = [json.loads(line) for line in entries.splitlines()]
    assert [r["MESSAGE"] for r in records] == ["copy finished"]
    assert records[0]["DRIVE"] == "offsite-a" and records[0]["PRIORITY"] == "4"
    assert records[0]["SYSLOG_IDENTIFIER"] == "offsite"


def test_host_is_left_as_it_was(host: HostTraces) -> None:
    host_config = Path("/etc/offsite/offsite.yaml")
    host_config_existed = host_config.exists()
    with sandboxmod.booted() as sandbox:
        # Things a booted system does, and things tests do, all of which must stay inside.
        sandbox.install_unit("leaktest.service", plug_unit(UUID, "x"), enable=True)
        sandbox.write("/tmp/leak-test", "inside only")
        sandbox.write("/etc/offsite/offsite.yaml", "jobs: {}\n")
        sandbox.run(["systemd-tmpfiles", "--create", "--remove", "--boot"], check=False)
        sandbox.run(["logger", "-t", "leaktest", "hello from the sandbox"])
        sandbox.plug(sandbox.make_drive("leak", UUID))
        sandbox.wait_for_state("leaktest.service", ["active"])
        # /dev is shared: the sandbox's udevd made this link on the host, teardown removes it
        assert Path(f"/dev/disk/by-uuid/{UUID}").exists()
        # While it runs, the host sees none of it.
        assert not Path("/etc/systemd/system/leaktest.service").exists()
        assert not Path("/tmp/leak-test").exists()
        assert host_config.exists() == host_config_existed
    host.check()


BINFMT = Path("/proc/sys/fs/binfmt_misc")


def test_the_hosts_binfmt_misc_entries_outlive_a_sandbox() -> None:
    """binfmt_misc is one table for the machine: a sandbox's systemd neither registers the
    host's binfmt.d entries into it nor, stopping, unregisters the host's own (seen: an
    arm64 entry the vm tier had added vanished while a sandbox stopped)."""
    mounted = False
    if not (BINFMT / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT])
        mounted = True
    canary = BINFMT / f"offsite-canary-{secrets.token_hex(4)}"
    try:
        # files named *.offsitecanary, run by /bin/false: nothing on the machine has one
        (BINFMT / "register").write_text(f":{canary.name}:E::offsitecanary::/bin/false:")
        with sandboxmod.booted() as sandbox:
            binfmt = sandbox.show("systemd-binfmt.service", "LoadState")
        assert canary.exists(), "the sandbox's teardown unregistered the host's binfmt entries"
        assert canary.read_text().splitlines()[0] == "enabled"
        assert binfmt == "masked"
    finally:
        if canary.exists():
            canary.write_text("-1")
        if mounted:
            run(["umount", BINFMT])


def test_teardown_on_error_leaves_nothing(host: HostTraces) -> None:
    pid1 = 0
    with pytest.raises(RuntimeError, match="test failure"), sandboxmod.booted() as sandbox:
        pid1 = sandbox.pid1
        sandbox.plug(sandbox.make_drive("err", UUID))
        raise RuntimeError("test failure")
    assert pid1 and not Path(f"/proc/{pid1}").exists()
    host.check()


def test_killed_owner_leaves_nothing_running(tmp_path: Path, host: HostTraces) -> None:
    """SIGKILL of the process that booted a sandbox: systemd dies with it, and the next
    sandbox detaches the loop device it left and cleans /dev."""
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""\
        import sys, time
        sys.path.insert(0, {str(ROOT / 'src')!r})
        from offsite_lab import sandbox
        with sandbox.booted() as s:
            s.plug(s.make_drive("orphan", {UUID!r}))
            open({str(ready)!r}, "w").write(str(s.pid1))
            time.sleep(120)
        """)
    owner = spawn([sys.executable, "-c", script], die_with_parent=True)
    deadline = time.monotonic() + 60
    while not (ready.exists() and ready.read_text()):
        assert owner.poll() is None, "the owner process died while booting"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid1 = int(ready.read_text())
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 15
    while Path(f"/proc/{pid1}").exists():
        assert time.monotonic() < deadline, "the sandbox systemd outlived its owner"
        time.sleep(0.05)
    # The loop device is still attached; the next sandbox cleans it up under the lock.
    assert traces()["loops"] != host.before["loops"]
    with sandboxmod.booted():
        pass
    host.check()


def test_sandboxes_are_serialised() -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with sandboxmod._locked():
            entered.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(10)
        with pytest.raises(Fatal, match="another sandbox"), sandboxmod._locked(timeout=0.5):
            pass
    finally:
        release.set()
        holder.join()


def test_the_command_for_humans_runs_inside_and_passes_the_exit_code(host: HostTraces) -> None:
    result = run([str(Path(sys.prefix) / "bin" / "offsite-lab"), "sandbox", "--", "sh", "-c",
                  "test \"$(cat /proc/1/comm)\" = systemd && exit 7"], check=False, timeout=120)
    assert result.returncode == 7, result.stdout + result.stderr
    assert "halted; nothing was left behind" in result.stdout
    host.check()
