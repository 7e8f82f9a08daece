"""The subprocess module, against real processes."""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

from offsite import run

SRC = Path(__file__).resolve().parents[2] / "src" / "offsite"


def test_captures_output() -> None:
    result = run.run(["sh", "-c", "echo out; echo err >&2"])
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")


def test_stdin_is_closed() -> None:
    # `cat` with a closed stdin ends at once instead of waiting for a terminal.
    assert run.run(["cat"], timeout=5).stdout == ""


def test_input_is_passed() -> None:
    assert run.run(["cat"], input="hello").stdout == "hello"


def test_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFSITE_SHOULD_NOT_LEAK", "1")
    monkeypatch.setenv("SYSTEMD_LOG_LEVEL", "debug")
    env = run.run(["env"]).stdout
    assert "OFFSITE_SHOULD_NOT_LEAK" not in env
    assert "SYSTEMD_LOG_LEVEL=debug" in env and "LANG=C.UTF-8" in env


def test_failure_names_command_and_stderr() -> None:
    with pytest.raises(run.CommandError) as info:
        run.run(["sh", "-c", "echo broken thing >&2; exit 3"])
    message = str(info.value)
    assert "exit code 3" in message and "broken thing" in message and "sh -c" in message
    assert info.value.returncode == 3


def test_ok_codes() -> None:
    assert run.run(["sh", "-c", "exit 24"], ok_codes=(0, 24)).returncode == 24


def test_secrets_are_masked_in_errors() -> None:
    with pytest.raises(run.CommandError) as info:
        run.run(["sh", "-c", "echo using hunter2 >&2; exit 1", "hunter2"], secrets=["hunter2"])
    assert "hunter2" not in str(info.value) and run.MASK in str(info.value)
    assert "hunter2" not in info.value.stderr


def test_secrets_are_masked_in_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="offsite.run")
    run.run(["true", "--password=hunter2"], secrets=["hunter2"])
    assert "hunter2" not in caplog.text and run.MASK in caplog.text


def test_missing_program() -> None:
    with pytest.raises(run.CommandError, match="not installed"):
        run.run(["offsite-no-such-program"])


def test_timeout_kills() -> None:
    with pytest.raises(run.CommandError, match=r"did not finish within 0\.2 s"):
        run.run(["sleep", "5"], timeout=0.2)


def test_spawned_child_dies_with_parent(tmp_path: Path) -> None:
    # A child of a child: when the middle process is killed, its child gets SIGKILL.
    pidfile = tmp_path / "pid"
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(SRC.parent)!r})\n"
        "from offsite import run\n"
        "p = run.spawn(['sleep', '60'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    middle = run.spawn([sys.executable, "-c", script], die_with_parent=False)
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    grandchild = int(pidfile.read_text())
    middle.kill()
    middle.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists():
        status = Path(f"/proc/{grandchild}/status").read_text() if Path(
            f"/proc/{grandchild}/status").exists() else ""
        if "State:\tZ" in status:
            break
        assert time.monotonic() < deadline, "grandchild outlived its parent"
        time.sleep(0.02)


def test_only_run_module_imports_subprocess() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "subprocess" for n in names) and path.name != "run.py":
                offenders.append(str(path.relative_to(SRC)))
            if any(n in ("os.system", "os.popen") for n in names):
                offenders.append(str(path.relative_to(SRC)))
    assert offenders == []
    text = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p.name != "run.py")
    assert "os.system(" not in text and "os.popen(" not in text and "os.exec" not in text


def test_a_secret_reaches_the_child_on_a_pipe_and_nowhere_else() -> None:
    from offsite.run import CommandError, FdSecret

    script = ("import os, sys\n"
              "fd = int(os.environ['SECRET_FD'])\n"
              "print(os.read(fd, 100).decode().strip(), open('/proc/self/cmdline').read(),\n"
              "      sorted(k for k, v in os.environ.items() if 'hunt' + 'er2' in v))")
    out = run.run([sys.executable, "-c", script], fd_secret=FdSecret("SECRET_FD", "hunter2")).stdout
    given, *rest = out.split(" ", 1)
    assert given == "hunter2" and "hunter2" not in rest[0]  # not in argv, not in the environment
    with pytest.raises(CommandError) as info:
        run.run([sys.executable, "-c", script + "\nsys.exit(3)"],
            fd_secret=FdSecret("SECRET_FD", "hunter2"))
    assert "hunter2" not in str(info.value)  # what the child printed is masked in the error


def test_a_stop_reaches_the_running_child_and_is_raised_once_it_has_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM to us (systemd stopping the job): the child gets it too, ends as it likes
    (its trap runs), and only then Stopped is raised; cleanup may still run commands."""
    import os
    import signal
    import threading

    monkeypatch.setattr(run, "_stop", None)  # (the module's state goes back afterwards)
    monkeypatch.setattr(run, "_stop_raised", False)
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = f"trap 'echo TERM > {got}; kill $!; exit 3' TERM; touch {ready}; sleep 30 & wait"

    def stop_us_when_ready() -> None:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    saved = {s: signal.getsignal(s) for s in run.STOP_SIGNALS}
    try:
        run.forward_stops()
        threading.Thread(target=stop_us_when_ready, daemon=True).start()
        with pytest.raises(run.Stopped) as info:
            run.run(["sh", "-c", script])
        assert info.value.signal_name == "SIGTERM" and run.stopping()
        assert got.read_text() == "TERM\n"
        assert run.run(["true"]).returncode == 0  # raised once: cleanup goes on
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_borg_always_gets_the_exit_codes_offsite_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BORG_EXIT_CODES", "modern")  # as a user's shell might have it
    monkeypatch.setenv("BORG_BASE_DIR", "/x")
    env = run.child_env()
    assert env["BORG_EXIT_CODES"] == "legacy" and env["BORG_BASE_DIR"] == "/x"
