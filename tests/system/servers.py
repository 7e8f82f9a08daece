"""Real servers on 127.0.0.1 for the system tier: an SMTP server (aiosmtpd) in plain,
STARTTLS and implicit-TLS modes with optional login, and an HTTP server that records
health pings. They run in this (the host's) network namespace, which the sandbox shares."""

from __future__ import annotations

import email
import email.policy
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from offsite_lab.sandbox import Sandbox
from offsite_lab.wait import wait_until

from offsite.run import run

USER = "offsite@example.org"
PASSWORD = "correct horse battery staple"
REFUSED = "nobody@example.org"  # the server refuses this recipient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the test trusts it through ca_file)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert])
    return cert, key


@dataclass
class Inbox:
    """What the SMTP server accepted."""

    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address == REFUSED:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    def wait(self, count: int, timeout: float = 60.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} mail(s) within {timeout:g} s, "
                                     f"got {len(self.messages)}")
            time.sleep(0.1)
        return self.messages


def _login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login.decode() == USER \
        and data.password.decode() == PASSWORD
    return AuthResult(success=ok, handled=False)


class SmtpServer:
    """mode: plain, starttls or tls; login: require a user name and password."""

    def __init__(self, mode: str = "plain", login: bool = False, cert: tuple[Path, Path] | None = None,
                 port: int | None = None) -> None:
        self.inbox = Inbox()
        self.port = port or free_port()
        context = None
        if mode != "plain":
            assert cert is not None
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        kwargs: dict[str, Any] = {}
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif mode == "tls":
            kwargs.update(ssl_context=context)
        if login:
            # auth_require_tls looks for STARTTLS only; an implicit-TLS connection is TLS
            kwargs.update(authenticator=_login, auth_required=True,
                          auth_require_tls=mode == "starttls")
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@dataclass
class Pings:
    """Requests the health-check server received: (method, path, body)."""

    seen: list[tuple[str, str, str]] = field(default_factory=list)

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]

    def wait(self, count: int, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} ping(s), got {self.paths()}")
            time.sleep(0.1)
        return self.paths()


class PingServer:
    def __init__(self) -> None:
        self.pings = Pings()
        pings = self.pings

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode(errors="replace")
                pings.seen.append(("POST", self.path, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


T = "/etc/offsite-test"  # the far side's sshd files: its config, host key, authorized_keys


def start_sshd(box: Sandbox, unit: str = "test-sshd", port: int | None = None) -> int:
    """A real sshd on 127.0.0.1 inside the sandbox (a transient unit of its systemd; root
    may log in with a key in T/authorized_keys); its port (started again: the same)."""
    port = port or free_port()
    box.run(["mkdir", "-p", T, "/run/sshd"])
    if not box.host_path(f"{T}/host_key").exists():
        box.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{T}/host_key"])
    box.write(f"{T}/sshd_config", "\n".join([
        f"ListenAddress 127.0.0.1:{port}", f"HostKey {T}/host_key",
        "PermitRootLogin prohibit-password", f"AuthorizedKeysFile {T}/authorized_keys",
        "StrictModes no", "UsePAM no", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PidFile none", ""]))
    if not box.host_path(f"{T}/authorized_keys").exists():
        box.write(f"{T}/authorized_keys", "", mode=0o600)
    box.systemd_run(["/usr/sbin/sshd", "-t", "-f", f"{T}/sshd_config"])
    box.run(["systemd-run", f"--unit={unit}", "--", "/usr/sbin/sshd", "-D", "-e", "-f",
             f"{T}/sshd_config"])
    # the sandbox shares this machine's network namespace
    box.wait_until("sshd to listen", lambda: f":{port:04X} 00000000:0000 0A" in Path(
        "/proc/net/tcp").read_text(), 10)
    return port


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    wait_until(what, predicate, timeout, every=0.1, error=AssertionError)
