"""How a job's run ended, from what systemd tells a unit's stop hook and its OnFailure=
unit: pure functions, no systemd needed."""

from __future__ import annotations

from dataclasses import dataclass

from offsite.errors import EXIT_SKIPPED, EXIT_WARNING

# SERVICE_RESULT values (systemd.exec(5)) and how to say them in a sentence.
_SERVICE_RESULTS = {
    "timeout": "ran out of time (TimeoutStartSec=)",
    "core-dump": "crashed (core dump)",
    "watchdog": "stopped answering the watchdog",
    "start-limit-hit": "was started too often (start limit hit)",
    "resources": "could not be started (resources: a missing directory, user or credential)",
    "oom-kill": "was killed for running out of memory",
    "exec-condition": "did not meet its ExecCondition=",
    "protocol": "broke the service protocol",
}


@dataclass(frozen=True)
class Outcome:
    result: str  # success, warning, skipped, interrupted, failed (history.RESULTS)
    detail: str | None  # for a failure: what happened, in words

    @property
    def failed(self) -> bool:
        return self.result == "failed"


def from_service(service_result: str, exit_code: str, exit_status: str) -> Outcome:
    """SERVICE_RESULT, EXIT_CODE and EXIT_STATUS as ExecStopPost= (or MONITOR_* as an
    OnFailure= unit) sees them."""
    if service_result == "success":
        if exit_code in ("killed", "dumped"):
            # systemd counts a main process ended by its own stop (SIGTERM) as clean: the
            # job was stopped (its drive pulled out, or by hand) before it finished
            return Outcome("interrupted", f"stopped before it finished (signal {exit_status})")
        if exit_code == "exited" and exit_status == str(EXIT_WARNING):
            return Outcome("warning", "finished with warnings")
        if exit_code == "exited" and exit_status == str(EXIT_SKIPPED):
            return Outcome("skipped", "nothing to do")
        return Outcome("success", None)
    if service_result in _SERVICE_RESULTS:
        return Outcome("failed", _SERVICE_RESULTS[service_result])
    if exit_code == "exited":
        return Outcome("failed", f"exit code {exit_status or '?'}")
    if exit_code in ("killed", "dumped"):
        signal = exit_status or "?"
        return Outcome("failed", f"killed by signal {signal}"
                       + (" (core dumped)" if exit_code == "dumped" else ""))
    return Outcome("failed", service_result or "failed for an unknown reason")


DRIVE_PULLED = "its drive was pulled out"  # (the agent shows such a run as a failure)


def stop_reason(service_result: str, drive_gone: bool, shutting_down: bool,
                timeout: str) -> str:
    """Why systemd stopped a run before it finished, from what the stop hook can see."""
    if service_result == "timeout":
        return f"it ran out of time (timeout {timeout})"
    if drive_gone:
        return DRIVE_PULLED
    if shutting_down:
        return "the machine is shutting down"
    return "stopped by hand (systemctl stop) or with a unit it needs"


def stopped(outcome: Outcome, reason: str, clean: bool) -> Outcome:
    """The outcome of a run systemd stopped, saying why and how its work ended: told to
    stop (borg released its lock, a pull's `after` ran), or killed."""
    how = "its work was told to stop and ended cleanly" if clean else "its work was killed"
    return Outcome(outcome.result, f"stopped: {reason}; {how}")
