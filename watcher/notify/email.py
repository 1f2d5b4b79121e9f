"""Email channel: one message per event over SMTP (STARTTLS, implicit TLS, or plain to a relay on this host), with a
text part and an HTML alternative, a Message-ID that is the event id and a per-campaign thread."""

from __future__ import annotations

import html
import json
import re
import ssl
import unicodedata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Annotated, Literal

import aiosmtplib
import pydantic
import structlog
from pydantic import Field, SecretStr

from ..client import describe_transport_error
from ..errors import DeliveryError
from ..fields import Duration, NotifierBase, is_loopback
from ..i18n import DEFAULT_LANGUAGE, N_, translator
from ..model import Event
from .base import FOR_PEOPLE, Context, EventFilter, Kind, digest_of
from .message import Digest, Fact, Message, Severity, build, build_digest

_log = structlog.get_logger("watcher.notify.email")

_DEFAULT_PORT = {"starttls": 587, "tls": 465, "none": 25}
_MAX_DETAIL = 10_000  # characters of one summary or suggestion: a mail stays readable, and far below any size limit


def check_address(value: str) -> str:
    """One mailbox, as the email library parses it: "user@example.com" or "Name <user@example.com>"."""
    problem = f'{json.dumps(value)} is not an email address (write "ops@example.com" or "Ops <ops@example.com>")'
    mail = EmailMessage(policy=policy.default)
    try:
        mail["To"] = value
        header = mail["To"]
        addresses = header.addresses
    except (ValueError, IndexError, TypeError):
        raise ValueError(problem) from None
    if header.defects or len(addresses) != 1 or not addresses[0].username or "." not in addresses[0].domain:
        raise ValueError(problem)
    return value


def check_host(value: str) -> str:
    if not value or any(c.isspace() or c in "/@" for c in value):
        raise ValueError('must be the SMTP server\'s host name or IP address, e.g. "smtp.example.com"')
    return value


Address = Annotated[str, pydantic.AfterValidator(check_address)]


class EmailNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "email": SMTP server, credentials, sender and recipients."""

    kind: Literal["email"]
    host: Annotated[str, pydantic.AfterValidator(check_host)]
    # None: 587 for "starttls", 465 for "tls", 25 for "none".
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    # "starttls": upgrade a plain connection (the submission port); "tls": TLS from the first byte (SMTPS);
    # "none": no TLS at all, accepted only for a relay on this host, or elsewhere without a password (with a warning).
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: SecretStr | None = None
    # `from` is a Python keyword: the field is `sender`, the key people write is `from`.
    sender: Annotated[Address, Field(alias="from")]
    to: Annotated[list[Address], Field(min_length=1)]
    cc: list[Address] = Field(default_factory=list)
    # How long the server may take to answer each step (connect, TLS, each command); None: `[delivery] timeout`.
    timeout: Duration | None = None

    @property
    def effective_port(self) -> int:
        """The configured port, else the usual one for `tls`."""
        return self.port if self.port is not None else _DEFAULT_PORT[self.tls]

    @pydantic.model_validator(mode="after")
    def _credentials_are_safe(self) -> EmailNotifierConfig:
        if bool(self.username) != (self.password is not None):
            raise ValueError("username and password: give both (SMTP AUTH) or neither")
        if self.tls == "none" and self.password is not None and not is_loopback(self.host):
            raise ValueError(
                'tls = "none" would send the password in clear across the network: use "starttls" or "tls" '
                '(tls = "none" is for a relay on this host: 127.0.0.1, ::1, localhost)'
            )
        return self


# -- rendering ---------------------------------------------------------------------------------------------------

# A severity marker before the headline, in the reader's language, so that mail rules and eyes can sort by it.
_SUBJECTS = {
    Severity.DANGER: N_("[Critical] {headline}"),
    Severity.WARNING: N_("[Warning] {headline}"),
    Severity.GOOD: N_("[OK] {headline}"),
    Severity.INFO: N_("[Info] {headline}"),
}
_COLOURS = {
    Severity.DANGER: "#cf222e",
    Severity.WARNING: "#9a6700",
    Severity.GOOD: "#1a7f37",
    Severity.INFO: "#0969da",
}


def _one_line(text: str) -> str:
    # A header holds one line: a campaign name with a newline or a control character must not end it (the email
    # library refuses CR/LF in a header value, and others would fold it strangely).
    return " ".join("".join(" " if unicodedata.category(c).startswith("C") else c for c in text).split())


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def subject(msg: Message) -> str:
    """The severity marker and the headline, on one line."""
    return _one_line(translator(msg.language).say(_SUBJECTS[msg.severity], headline=msg.headline))


def text_body(msg: Message) -> str:
    """The text/plain part."""
    paragraphs = [msg.headline]
    if msg.facts:
        paragraphs.append("\n".join(f"{fact.label}: {fact.value}" for fact in msg.facts))
    # (a template's body comes as one detail without a label)
    paragraphs += [f"{d.label}:\n{_cut(d.value)}" if d.label else _cut(d.value) for d in msg.details]
    if msg.link:
        paragraphs.append(f"{msg.link_text}: {msg.link}")
    # "-- " is the signature separator: mail clients show what follows as a footer.
    paragraphs.append(f"-- \n{msg.footer}")
    return "\n\n".join(paragraphs) + "\n"


def _h(text: str) -> str:
    return html.escape(text, quote=True).replace("\n", "<br>")


def _facts_table(facts: Sequence[Fact]) -> list[str]:
    rows = "".join(
        '<tr><th style="text-align:left;font-weight:normal;color:#57606a;padding:4px 16px 4px 0;'
        f'white-space:nowrap;vertical-align:top">{_h(fact.label)}</th>'
        f'<td style="padding:4px 0">{_h(fact.value)}</td></tr>\n'
        for fact in facts
    )
    return [f'<table role="presentation" cellpadding="0" cellspacing="0">\n{rows}</table>'] if rows else []


def _document(title: str, language: str, colour: str, content: list[str]) -> str:
    """A whole HTML mail around `content`: inline styles only (mail clients drop style sheets)."""
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="{_h(language)}">',
        '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{_h(title)}</title></head>",
        '<body style="margin:0;padding:16px;background:#f6f8fa;color:#1f2328;font-family:-apple-system,'
        "'Segoe UI','Hiragino Sans','Meiryo','Microsoft YaHei','PingFang SC',sans-serif;font-size:14px\">",
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:640px;'
        f'border-collapse:collapse;background:#ffffff;border-top:4px solid {colour}">',
        '<tr><td style="padding:16px 20px">',
        *content,
        "</td></tr></table>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _footer(text: str) -> str:
    return f'<p style="margin:20px 0 0;font-size:12px;color:#57606a">{_h(text)}</p>'


def html_body(msg: Message) -> str:
    """The text/html alternative: inline styles only (mail clients drop style sheets); every text escaped."""
    colour = _COLOURS[msg.severity]
    parts = [f'<h1 style="font-size:18px;margin:0 0 12px">{_h(msg.headline)}</h1>', *_facts_table(msg.facts)]
    for detail in msg.details:
        if detail.label:  # (a template's body comes without one)
            parts.append(f'<h2 style="font-size:14px;margin:16px 0 4px">{_h(detail.label)}</h2>')
        parts.append(f'<p style="margin:0">{_h(_cut(detail.value))}</p>')
    if msg.link:
        parts.append(
            f'<p style="margin:20px 0 0"><a href="{html.escape(msg.link, quote=True)}" style="display:inline-block;'
            f'padding:8px 16px;background:{colour};color:#ffffff;text-decoration:none;border-radius:4px">'
            f"{_h(msg.link_text)}</a></p>"
        )
    parts.append(_footer(msg.footer))
    return _document(subject(msg), msg.language, colour, parts)


def digest_subject(digest: Digest) -> str:
    """The severity marker of the digest's most severe event and its headline, on one line."""
    return _one_line(translator(digest.language).say(_SUBJECTS[digest.severity], headline=digest.headline))


def digest_text(digest: Digest) -> str:
    """The text/plain part of a digest: its headline, then each event numbered, with its facts, details and link."""
    paragraphs = [digest.headline]
    for number, item in enumerate(digest.items, 1):
        lines = [f"{number}. {item.headline}"]
        lines += [f"   {fact.label}: {fact.value}" for fact in item.facts]
        lines += [
            f"   {d.label}: {_one_line(_cut(d.value))}" if d.label else f"   {_cut(d.value)}" for d in item.details
        ]
        if item.link:
            lines.append(f"   {item.link_text}: {item.link}")
        lines.append(f"   {item.footer}")
        paragraphs.append("\n".join(lines))
    paragraphs.append(f"-- \n{digest.footer}")
    return "\n\n".join(paragraphs) + "\n"


def digest_html(digest: Digest) -> str:
    """The text/html alternative of a digest: its headline, then a block per event (its headline in its severity's
    colour, its facts, details and link)."""
    parts = [f'<h1 style="font-size:18px;margin:0 0 12px">{_h(digest.headline)}</h1>']
    for item in digest.items:
        colour = _COLOURS[item.severity]
        parts.append(f'<div style="margin:16px 0 0;padding:0 0 0 12px;border-left:3px solid {colour}">')
        parts.append(f'<h2 style="font-size:15px;margin:0 0 6px;color:{colour}">{_h(item.headline)}</h2>')
        parts += _facts_table(item.facts)
        parts += [
            f'<p style="margin:6px 0 0">{f"<b>{_h(d.label)}</b>: " if d.label else ""}{_h(_cut(d.value))}</p>'
            for d in item.details
        ]
        if item.link:
            parts.append(
                f'<p style="margin:6px 0 0"><a href="{html.escape(item.link, quote=True)}">{_h(item.link_text)}</a></p>'
            )
        parts.append(f'<p style="margin:6px 0 0;font-size:12px;color:#57606a">{_h(item.footer)}</p>')
        parts.append("</div>")
    parts.append(_footer(digest.footer))
    return _document(digest_subject(digest), digest.language, _COLOURS[digest.severity], parts)


_NOT_ATOM = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")


def _atom(text: str) -> str:
    # The left side of a msg-id is a dot-atom: anything else (spaces, @, <>) becomes "-".
    return _NOT_ATOM.sub("-", text).strip(".-") or "event"


def message_id(event_id: str, domain: str) -> str:
    """The Message-ID of an event's mail: the same on every retry, so mail clients and servers deduplicate."""
    return f"<{_atom(event_id)}@{domain}>"


def thread_id(subject_: str, domain: str) -> str:
    """The id every mail about one task refers to (In-Reply-To, References), so a campaign's mails thread."""
    return f"<voicefox-{'task-' if subject_.isdigit() else ''}{_atom(subject_)}@{domain}>"


def compose(
    msg: Message, *, subject_of: str, sender: str, to: Sequence[str], cc: Sequence[str], now: datetime
) -> EmailMessage:
    """The whole mail of a message; `subject_of` is the event's subject (the task id), which names its thread."""
    mail = _mail(text_body(msg), html_body(msg), subject(msg), sender=sender, to=to, cc=cc, now=now)
    domain = mail_domain(sender)
    mail["Message-ID"] = message_id(msg.event_id, domain)
    mail["In-Reply-To"] = mail["References"] = thread_id(subject_of, domain)
    mail["Content-Language"] = msg.language
    mail["X-VoiceFox-Event-Type"] = msg.event_type
    mail["X-VoiceFox-Severity"] = msg.severity.value
    return mail


def compose_digest(
    digest: Digest, *, subjects: Sequence[str], sender: str, to: Sequence[str], cc: Sequence[str], now: datetime
) -> EmailMessage:
    """The one mail of a digest; `subjects` are its events' subjects: when all are one task, it joins that thread."""
    mail = _mail(digest_text(digest), digest_html(digest), digest_subject(digest), sender=sender, to=to, cc=cc, now=now)
    domain = mail_domain(sender)
    mail["Message-ID"] = message_id(digest.id, domain)
    if len(set(subjects)) == 1:
        mail["In-Reply-To"] = mail["References"] = thread_id(subjects[0], domain)
    mail["Content-Language"] = digest.language
    mail["X-VoiceFox-Digest"] = digest.id
    mail["X-VoiceFox-Severity"] = digest.severity.value
    return mail


def _mail(
    text: str, html_text: str, subject_: str, *, sender: str, to: Sequence[str], cc: Sequence[str], now: datetime
) -> EmailMessage:
    mail = EmailMessage(policy=policy.default)
    mail.set_content(text, charset="utf-8")
    mail.add_alternative(html_text, subtype="html", charset="utf-8")
    # Headers after the parts: turning the mail into multipart/alternative moves Content-* headers into its first part.
    mail["Subject"] = subject_  # non-ASCII is written as RFC 2047 encoded words by the email library
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    if cc:
        mail["Cc"] = ", ".join(cc)
    mail["Date"] = format_datetime(now)
    # An alert is machine-sent: no out-of-office or vacation replies to it (RFC 3834; Exchange's own header).
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Auto-Response-Suppress"] = "All"
    return mail


def mail_domain(address: str) -> str:
    """The domain of a mailbox ("Ops <ops@example.com>" -> "example.com")."""
    mail = EmailMessage(policy=policy.default)
    mail["From"] = address
    return str(mail["From"].addresses[0].domain)


def addr_spec(address: str) -> str:
    """The bare address of a mailbox, for the SMTP envelope ("Ops <ops@example.com>" -> "ops@example.com")."""
    mail = EmailMessage(policy=policy.default)
    mail["To"] = address
    return str(mail["To"].addresses[0].addr_spec)


# -- sending -----------------------------------------------------------------------------------------------------


def tls_context(verify: bool) -> ssl.SSLContext:
    """The system's trust store (and SSL_CERT_FILE), or no verification at all with `[delivery] verify_tls = false`."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class EmailNotifier:
    """Sends each event as one mail through an SMTP server."""

    def __init__(
        self,
        config: EmailNotifierConfig,
        *,
        language: str = DEFAULT_LANGUAGE,
        task_url: str = "",
        messages: Callable[[Event], Message] | None = None,
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        digest: bool = True,
    ) -> None:
        self.name = config.name
        self.digest = digest
        self._language = language
        self._config = config
        self._message = messages or (lambda event: build(event, language=language, task_url=task_url))
        self._timeout = config.timeout if config.timeout is not None else timeout
        self._tls = None if config.tls == "none" else (tls or tls_context(True))
        self._clock = clock
        self._password = config.password.get_secret_value() if config.password else ""
        self._sender = addr_spec(config.sender)
        self._recipients = [addr_spec(a) for a in (*config.to, *config.cc)]
        self._shown = f"{config.name} (smtp {config.host}:{config.effective_port})"
        self.wants = EventFilter(config.events if config.events is not None else FOR_PEOPLE)
        if config.tls == "none" and not is_loopback(config.host):
            _log.warning(
                "email.tls_disabled",
                notifier=config.name,
                host=config.host,
                hint='tls = "none": anyone on the path can read the alerts (and change them)',
            )

    @classmethod
    def from_config(cls, config: EmailNotifierConfig, context: Context) -> EmailNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(
            config,
            language=context.language_of(config),
            messages=context.messages_for(config),
            timeout=context.timeout,
            tls=tls_context(context.verify_tls),
            digest=digest_of(config),
        )

    def compose(self, event: Event) -> EmailMessage:
        """The mail of an event."""
        msg = self._message(event)
        c = self._config
        return compose(msg, subject_of=event.subject, sender=c.sender, to=c.to, cc=c.cc, now=self._clock())

    def compose_digest(self, events: Sequence[Event]) -> EmailMessage:
        """The one mail of several events."""
        digest = build_digest(events, language=self._language, messages=self._message)
        c, subjects = self._config, [event.subject for event in events]
        return compose_digest(digest, subjects=subjects, sender=c.sender, to=c.to, cc=c.cc, now=self._clock())

    async def send(self, event: Event) -> None:
        """Hand the mail to the server or raise DeliveryError: 5xx replies are permanent, the rest temporary."""
        await self._deliver(self.compose(event))

    async def send_digest(self, events: Sequence[Event]) -> None:
        """Hand one mail listing the events to the server, or raise DeliveryError as `send` does."""
        await self._deliver(self.compose_digest(events))

    async def _deliver(self, mail: EmailMessage) -> None:
        c = self._config
        try:
            refused, _ = await aiosmtplib.send(
                mail,
                sender=self._sender,
                recipients=self._recipients,
                hostname=c.host,
                port=c.effective_port,
                username=c.username or None,
                password=self._password or None,
                use_tls=c.tls == "tls",
                start_tls=c.tls == "starttls",  # required when asked for: never fall back to plain text
                tls_context=self._tls,
                timeout=self._timeout,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is translated here, once, and none escapes
            raise self._error(exc) from None
        if refused:
            # Some recipients took it: sending again would give them a second copy, so this is a success (logged).
            _log.warning(
                "email.recipients_refused",
                notifier=self.name,
                refused={address: f"{r.code} {self._clean(r.message)}" for address, r in refused.items()},
            )

    def _clean(self, text: str) -> str:
        text = " ".join(text.split())
        if self._password:
            text = text.replace(self._password, "***")
        return text[:200]

    def _error(self, exc: Exception) -> DeliveryError:
        """The DeliveryError for what aiosmtplib (or the TLS layer under it) raised."""
        shown = self._shown
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            replies = "; ".join(f"{r.recipient}: {r.code} {self._clean(r.message)}" for r in exc.recipients)
            return DeliveryError(
                f"{shown}: every recipient refused: {replies}",
                # A 4xx (greylisting, a full mailbox) may pass later; only 5xx for every one of them is final.
                permanent=all(r.code >= 500 for r in exc.recipients),
            )
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                what = "authentication failed (check username and password)"
            elif isinstance(exc, aiosmtplib.SMTPSenderRefused):
                what = "sender refused (check from)"
            elif isinstance(exc, aiosmtplib.SMTPConnectResponseError):
                what = "server refused the connection"
            else:
                what = "server answered"
            reply = f"{exc.code} {self._clean(exc.message)}"
            return DeliveryError(f"{shown}: {what}: {reply}", permanent=exc.code >= 500)
        if (tls_error := _ssl_cause(exc)) is not None:
            # A certificate or a TLS setting can be fixed: the outbox keeps the mail meanwhile.
            return DeliveryError(f"{shown}: TLS failed ({describe_transport_error(tls_error)})")
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
            return DeliveryError(f"{shown}: no answer in time")
        if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | OSError):
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            return DeliveryError(f"{shown}: cannot connect ({describe_transport_error(cause)})")
        if isinstance(exc, aiosmtplib.SMTPException):
            # What the server does not offer (STARTTLS, AUTH): a server's setting, which can change; retried.
            return DeliveryError(f"{shown}: {self._clean(exc.message)}")
        return DeliveryError(f"{shown}: {exc.__class__.__name__}: {self._clean(str(exc))}")


KIND = Kind(
    config=EmailNotifierConfig, default_events=FOR_PEOPLE, build=EmailNotifier.from_config, secrets=("password",)
)
