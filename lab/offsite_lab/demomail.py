"""The demo's mail server: an SMTP server on 127.0.0.1 that delivers every message into a
local mbox file, so `offsite demo` can show the failure mail as it arrived. (aiosmtpd, from
the `demo` extra; the tests use the same library for their servers.)"""

from __future__ import annotations

import logging
import mailbox
import socket
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from offsite.errors import Fatal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Deliver:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        box = mailbox.mbox(str(self.path))
        try:
            box.lock()
            box.add(mailbox.mboxMessage(envelope.original_content or envelope.content))
            box.flush()
        finally:
            box.unlock()
            box.close()
        return "250 delivered to the local mailbox"


class Mailbox:
    """Run while the context is open; messages() reads what was delivered."""

    def __init__(self, path: Path) -> None:
        try:
            from aiosmtpd.controller import Controller
        except ImportError as exc:
            raise Fatal("the demo's mail server needs aiosmtpd",
                        "pip install 'offsite[demo]' (make demo installs it)") from exc
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's chatter
        self.path = path
        self.port = free_port()
        self._controller = Controller(_Deliver(path), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> Mailbox:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

    def messages(self) -> list[EmailMessage]:
        if not self.path.exists():
            return []
        out = []
        for raw in mailbox.mbox(str(self.path)):
            parsed = message_from_bytes(raw.as_bytes(), policy=policy.default)
            if isinstance(parsed, EmailMessage):
                out.append(parsed)
        return out
