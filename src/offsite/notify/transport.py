"""Handing a mail to a server: SMTP (STARTTLS, implicit TLS or plain, with login) or the
local sendmail. Certificates are verified unless the config says otherwise.

Raises DeliveryError with a message that says what went wrong in words (wrong password,
refused recipient, certificate not trusted); the spool decides what happens next.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from offsite.config.model import Email, Smtp, SmtpSecurity
from offsite.run import CommandError, run

CREDENTIAL = "offsite-smtp-password"  # the systemd credential holding the SMTP password


class DeliveryError(Exception):
    """The mail (or ping) was not handed over. refused: recipients the server turned
    down, when it took the mail for the others (only those are left to try again).
    give_up: trying again makes no sense (a health ping too old to mean anything)."""

    def __init__(self, message: str, refused: Sequence[str] = (), give_up: bool = False) -> None:
        super().__init__(message)
        self.refused = tuple(refused)
        self.give_up = give_up


def password(smtp: Smtp) -> str:
    """The SMTP password: from password_file, else from the systemd credential."""
    if smtp.password_file is not None:
        try:
            return smtp.password_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise DeliveryError(f"cannot read the SMTP password file {smtp.password_file}: "
                                f"{exc.strerror}") from exc
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if directory:
        path = Path(directory) / CREDENTIAL
        try:
            return path.read_text().rstrip("\r\n")
        except OSError:
            pass
    raise DeliveryError(
        f"no SMTP password for {smtp.username}: set notify.email.smtp.password_file, or give "
        f"offsite-outbox.service the systemd credential {CREDENTIAL} "
        f"(systemctl edit offsite-outbox.service: LoadCredentialEncrypted={CREDENTIAL}:...)")


def tls_context(smtp: Smtp) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not smtp.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif smtp.ca_file is not None:
        context.load_verify_locations(cafile=str(smtp.ca_file))
    return context


def _connect(smtp: Smtp) -> smtplib.SMTP:
    if smtp.security is SmtpSecurity.TLS:
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                context=tls_context(smtp))
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    if smtp.security is SmtpSecurity.STARTTLS:
        client.ehlo()
        if not client.has_extn("starttls"):
            client.close()
            raise DeliveryError(f"{smtp.host}:{smtp.port} does not offer STARTTLS; refusing to "
                                "send in the clear", )
        client.starttls(context=tls_context(smtp))
        client.ehlo()
    return client


def _smtp_send(smtp: Smtp, sender: str, recipients: Sequence[str], message: bytes) -> None:
    where = f"{smtp.host}:{smtp.port} ({smtp.security.value})"
    try:
        client = _connect(smtp)
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"TLS failure with {where}: the server's certificate is not "
                            f"trusted ({exc.verify_message}); set ca_file to trust it") from exc
    except ssl.SSLError as exc:
        raise DeliveryError(f"TLS failure with {where}: {exc.reason or exc}") from exc
    except (OSError, smtplib.SMTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, socket.timeout):
            reason = f"no answer within {smtp.timeout:g} s"
        raise DeliveryError(f"cannot reach the mail server {where}: {reason}") from exc
    try:
        if smtp.username:
            try:
                client.login(smtp.username, password(smtp))
            except smtplib.SMTPAuthenticationError as exc:
                raise DeliveryError(f"{where} refused the login of {smtp.username} (wrong user "
                                    f"name or password): {exc.smtp_code} {_text(exc.smtp_error)}"
                                    ) from exc
            except smtplib.SMTPNotSupportedError as exc:
                raise DeliveryError(f"{where} does not offer a login (AUTH)") from exc
        # smtplib sends bytes as they are: SMTP wants CRLF line ends (a bare LF makes the
        # whole message one over-long line to a strict server)
        wire = re.sub(rb"\r?\n", b"\r\n", message)
        try:
            refused = client.sendmail(sender, list(recipients), wire)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"{where} refused every recipient: "
                                + _refusals(exc.recipients), list(exc.recipients)) from exc
        except smtplib.SMTPSenderRefused as exc:
            raise DeliveryError(f"{where} refused the sender {sender}: {exc.smtp_code} "
                                f"{_text(exc.smtp_error)}") from exc
        except smtplib.SMTPDataError as exc:
            raise DeliveryError(f"{where} refused the message: {exc.smtp_code} "
                                f"{_text(exc.smtp_error)}") from exc
        if refused:
            raise DeliveryError(f"{where} refused some recipients: " + _refusals(refused),
                                list(refused))
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"lost the connection to {where}: {exc}") from exc
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _text(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{who} ({code} {_text(why)})" for who, (code, why) in refused.items())


def _sendmail(program: Path, sender: str, recipients: Sequence[str], message: bytes) -> None:
    try:
        run([program, "-i", "-f", sender, "--", *recipients], input=message.decode())
    except CommandError as exc:
        raise DeliveryError(f"the local sendmail failed: {exc}") from exc


def send(cfg: Email, recipients: Sequence[str], message: bytes) -> None:
    """Hand message to the configured transport for recipients; DeliveryError if not."""
    if cfg.smtp is not None:
        _smtp_send(cfg.smtp, cfg.sender, recipients, message)
    else:
        _sendmail(cfg.sendmail, cfg.sender, recipients, message)
