"""The one place where offsite starts other programs.

Every child gets a typed argv (never a shell string), stdin closed unless input is given,
a minimal environment, and a readable error when it fails. Values listed as secrets are
masked wherever a command line or its output reaches a log or an error message.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger(__name__)

Arg = str | Path

# What a child sees of the environment unless the caller adds more: enough to find
# programs and to print UTF-8, nothing the caller's shell happened to carry.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
# Passed through from our own environment when set: where systemd and D-Bus are.
PASSTHROUGH_ENV = ("SYSTEMD_LOG_LEVEL", "DBUS_SYSTEM_BUS_ADDRESS", "CREDENTIALS_DIRECTORY",
                   # where systemd connected our output, and which run of a unit this is
                   "JOURNAL_STREAM", "INVOCATION_ID", "NOTIFY_SOCKET")
PASSTHROUGH_PREFIXES = ("BORG_",)

MASK = "********"


@dataclass(frozen=True)
class FdSecret:
    """A secret handed to a child on a pipe, never in its argv or its environment: the
    child finds the pipe's file descriptor in the variable `variable` (borg reads its
    passphrase so from BORG_PASSPHRASE_FD)."""

    variable: str
    value: str


@contextlib.contextmanager
def _secret_pipe(secret: FdSecret | None) -> Iterator[tuple[dict[str, str], tuple[int, ...]]]:
    """The extra environment and the fd to pass, for the life of the child's start."""
    if secret is None:
        yield {}, ()
        return
    data = secret.value.encode() + b"\n"
    if len(data) > 60000:  # more would block before the child reads: no secret is this big
        raise CommandError(f"a secret of {len(data)} bytes is too large to hand over")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
        os.close(write_end)
        write_end = -1
        yield {secret.variable: str(read_end)}, (read_end,)
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)


class CommandError(Exception):
    """A command could not be started, failed, or ran out of time."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class Stopped(Exception):
    """This process was asked to stop (systemd's SIGTERM on `systemctl stop`, a pulled drive
    or a timeout). The running child was handed the same signal and has ended; raised
    once, so cleanup after it (unmounting, a pull's `after`) may still run commands."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"asked to stop ({self.signal_name})")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_children: dict[subprocess.Popen[Any], str] = {}  # started here, not yet waited for: its name
_stop: int | None = None  # the signal that asked us to stop, once one has
_stop_raised = False


def forward_stops() -> None:
    """From now on a stop signal is handed on to the running child (so borg releases its
    lock and rsync ends cleanly) and, once that child has ended, raised here as Stopped;
    with no child running, it is raised at once. Without this Python would die on SIGTERM
    and leave its children to systemd's SIGKILL."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_stop)


def stopping() -> bool:
    """Whether a stop was asked for (cleanup keeps its own work short then)."""
    return _stop is not None


def _on_stop(signum: int, _frame: object) -> None:
    global _stop, _stop_raised
    first = _stop is None
    _stop = signum
    children = list(_children)
    for proc in children:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
    if first:
        told = ", ".join(f"{_children.get(p, '?')} (pid {p.pid})" for p in children)
        log.warning("asked to stop (%s)%s", signal.Signals(signum).name,
                    f"; passed on to {told}" if told else "")
    if not children and not _stop_raised:
        _stop_raised = True
        raise Stopped(signum)


@contextlib.contextmanager
def _tracked(proc: subprocess.Popen[Any]) -> Iterator[None]:
    """proc is one a stop signal is handed to until it has been waited for; after it,
    the stop (if one came) is raised."""
    global _stop_raised
    _children[proc] = Path(str(proc.args[0] if isinstance(proc.args, list | tuple)
                                   else proc.args)).name
    try:
        yield
    finally:
        _children.pop(proc, None)
    if _stop is not None and not _stop_raised:
        _stop_raised = True
        raise Stopped(_stop)


def die_of(signum: int) -> NoReturn:
    """End this process by signum, as if it had never been caught: systemd then sees a
    service stopped by its own stop signal, not one that failed."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    raise SystemExit(128 + signum)  # (not reached for TERM, INT, HUP)


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Masker:
    secrets: tuple[str, ...] = field(default=())

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, MASK)
        return text


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(BASE_ENV)
    for name, value in os.environ.items():
        # borg is configured through BORG_* variables (passphrase, base dir, ssh command)
        if name in PASSTHROUGH_ENV or name.startswith(PASSTHROUGH_PREFIXES):
            env[name] = value
    # borg's exit codes as offsite reads them (1: a warning, 2: an error), whatever the
    # environment says: borg 1.4 gives other codes under BORG_EXIT_CODES=modern (borgmatic
    # 1.8.7+ sets that for the borg it runs itself, not for offsite's)
    env["BORG_EXIT_CODES"] = "legacy"
    if extra:
        env.update(extra)
    return env


def describe(argv: Sequence[Arg], secrets: Iterable[str] = ()) -> str:
    """The command line as a person would type it, with secrets masked."""
    return Masker(tuple(secrets))(shlex.join(str(a) for a in argv))


def _tail(text: str, lines: int = 15) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept)


def run(
    argv: Sequence[Arg],
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    secrets: Iterable[str] = (),
    ok_codes: Iterable[int] = (0,),
    fd_secret: FdSecret | None = None,
) -> Result:
    """Run argv to completion and capture its output as text.

    With check (the default) an exit code outside ok_codes raises CommandError whose
    message names the command and quotes the end of its stderr. The child is killed if
    we are interrupted or the timeout passes.
    """
    args = tuple(str(a) for a in argv)
    mask = Masker((*secrets, *((fd_secret.value,) if fd_secret else ())))
    shown = describe(args, mask.secrets)
    log.debug("running %s", shown)
    try:
        with _secret_pipe(fd_secret) as (secret_env, fds):
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=child_env({**(env or {}), **secret_env}),
                cwd=cwd,
                pass_fds=fds,
            )
    except FileNotFoundError as exc:
        raise CommandError(f"cannot run {shown}: {args[0]} is not installed or not on PATH") from exc
    except PermissionError as exc:
        raise CommandError(f"cannot run {shown}: {exc.strerror}") from exc
    with _tracked(proc):
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise CommandError(f"{shown} did not finish within {timeout:g} s and was killed") \
                from exc
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    result = Result(args, proc.returncode, stdout, stderr)
    if check and proc.returncode not in set(ok_codes):
        stderr = mask(result.stderr)
        detail = _tail(stderr or mask(result.stdout))
        message = f"{shown} failed with exit code {proc.returncode}"
        if detail:
            message += ":\n" + detail
        raise CommandError(message, proc.returncode, stderr)
    return result


def interactive(argv: Sequence[Arg], *, env: Mapping[str, str] | None = None,
                fd_secret: FdSecret | None = None) -> int:
    """Run argv on our own terminal (a shell for a person) and return its exit code."""
    args = tuple(str(a) for a in argv)
    log.debug("running interactively %s", describe(args))
    try:
        with _secret_pipe(fd_secret) as (secret_env, fds):
            proc = subprocess.Popen(args, env=child_env({**(env or {}), **secret_env}),
                                    pass_fds=fds)
    except FileNotFoundError as exc:
        raise CommandError(f"cannot run {describe(args)}: {args[0]} is not installed") from exc
    with _tracked(proc):
        try:
            return proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise


@contextlib.contextmanager
def stream(argv: Sequence[Arg], env: Mapping[str, str] | None = None) -> Iterator[Iterator[str]]:
    """Start argv and yield an iterator over its output lines; the child is killed when the
    block ends (for followers such as `journalctl --follow`)."""
    args = tuple(str(a) for a in argv)
    log.debug("following %s", describe(args))
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, errors="replace",
                                env=child_env(env))
    except FileNotFoundError as exc:
        raise CommandError(f"cannot run {describe(args)}: {args[0]} is not installed") from exc
    try:
        assert proc.stdout is not None  # noqa: S101 - PIPE was asked for
        yield iter(proc.stdout.readline, "")
    finally:
        proc.kill()
        proc.wait()


def lines(
    argv: Sequence[Arg],
    on_line: Callable[[str], None],
    *,
    ok_codes: Iterable[int] = (0,),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    secrets: Iterable[str] = (),
    fd_secret: FdSecret | None = None,
) -> Result:
    """Run argv, handing each line of its output (stdout and stderr together) to on_line
    as it comes, for a long run that reports progress. The result has no stdout; its
    stderr is the last lines, for the error message."""
    args = tuple(str(a) for a in argv)
    mask = Masker((*secrets, *((fd_secret.value,) if fd_secret else ())))
    shown = describe(args, mask.secrets)
    log.debug("running %s", shown)
    try:
        with _secret_pipe(fd_secret) as (secret_env, fds):
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace",
                                    env=child_env({**(env or {}), **secret_env}), pass_fds=fds)
    except FileNotFoundError as exc:
        raise CommandError(f"cannot run {shown}: {args[0]} is not installed or not on PATH") from exc
    tail: collections.deque[str] = collections.deque(maxlen=15)
    timer = threading.Timer(timeout, proc.kill) if timeout else None
    if timer:
        timer.start()
    with _tracked(proc):
        try:
            assert proc.stdout is not None  # noqa: S101 - PIPE was asked for
            for raw in proc.stdout:
                line = mask(raw.rstrip("\n"))
                tail.append(line)
                on_line(line)
            proc.wait()
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if timer and not timer.is_alive() and proc.returncode == -signal.SIGKILL:
        raise CommandError(f"{shown} did not finish within {timeout:g} s and was killed")
    result = Result(args, proc.returncode, "", "\n".join(tail))
    if proc.returncode not in set(ok_codes):
        message = f"{shown} failed with exit code {proc.returncode}"
        if result.stderr:
            message += ":\n" + _tail(result.stderr)
        raise CommandError(message, proc.returncode, result.stderr)
    return result


def spawn(
    argv: Sequence[Arg],
    *,
    stdout: Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = True,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running child (a sandbox, a server) and return it without waiting.

    Its output goes to the given file (or is discarded). With die_with_parent the kernel
    sends it SIGKILL if this process dies first, so nothing outlives a killed test run.
    """
    args = tuple(str(a) for a in argv)
    log.debug("starting %s", describe(args))
    out = open(stdout, "ab") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            start_new_session=new_session,
            preexec_fn=_kill_me_with_parent if die_with_parent else None,
        )
    except FileNotFoundError as exc:
        raise CommandError(f"cannot run {describe(args)}: {args[0]} is not installed") from exc
    finally:
        if stdout is not None and not isinstance(out, int):
            out.close()


def _kill_me_with_parent() -> None:
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
