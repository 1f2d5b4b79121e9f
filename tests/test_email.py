"""Email for real: a real SMTP server (aiosmtpd) on 127.0.0.1, plain, with STARTTLS and with TLS from the first byte
(a throwaway CA), with AUTH, and with scripted refusals; the mail's headers, parts and escaping."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
import trustme

from watcher import config as config_mod
from watcher.errors import ConfigError, DeliveryError
from watcher.model import EventType
from watcher.notify.email import EmailNotifier, EmailNotifierConfig
from watcher.notify.message import build

from .conftest import Mailbox, smtp_server
from .test_notify import closed_port, event_of

pytestmark = pytest.mark.anyio
SENT_AT = datetime(2026, 11, 23, 9, 0, 5, tzinfo=UTC)


def settings(port: int, **overrides: Any) -> EmailNotifierConfig:
    raw: dict[str, Any] = {
        "kind": "email",
        "name": "ops-mail",
        "host": "127.0.0.1",
        "port": port,
        "tls": "none",
        "from": "VoiceFox 監視 <watcher@example.com>",
        "to": ["ops@example.com"],
        "timeout": "5s",
    } | overrides
    return EmailNotifierConfig.model_validate(raw)


def notifier(config: EmailNotifierConfig, *, tls: ssl.SSLContext | None = None, **kw: Any) -> EmailNotifier:
    return EmailNotifier(config, tls=tls, clock=lambda: SENT_AT, **kw)


def parts(mail: EmailMessage) -> tuple[str, str]:
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    return plain.get_content(), html.get_content()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """What a client that trusts the throwaway CA uses (as SSL_CERT_FILE would make the default context do)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- delivery ----------------------------------------------------------------------------------------------------


async def test_one_mail_per_event_with_both_parts_and_the_headers_that_thread_and_deduplicate(
    mailbox: Mailbox,
) -> None:
    config = settings(mailbox.port, cc=["Lead <lead@example.com>"], language="ja")
    mail_notifier = notifier(config, language="ja", task_url="https://console.example/tasks/{id}")
    failed = event_of(EventType.FAILED)
    await mail_notifier.send(failed)
    await mail_notifier.send(failed)  # a retry after a lost answer
    await mail_notifier.send(event_of(EventType.STALLED))
    assert mailbox.envelopes[0] == ("watcher@example.com", ["ops@example.com", "lead@example.com"])
    first, again, stalled = mailbox.mails
    message = build(failed, language="ja")
    assert first["Subject"] == f"【重大】{message.headline}"
    assert first["From"] == "VoiceFox 監視 <watcher@example.com>"
    assert first["To"] == "ops@example.com" and first["Cc"] == "Lead <lead@example.com>"
    assert first["Content-Language"] == "ja"
    assert first["Message-ID"] == f"<{failed.id}@example.com>" == again["Message-ID"]
    assert stalled["Message-ID"] != first["Message-ID"]
    assert first["In-Reply-To"] == first["References"] == "<voicefox-task-1001@example.com>"
    assert stalled["References"] == first["References"]  # one thread per task
    assert first["Date"] == "Mon, 23 Nov 2026 09:00:05 +0000"
    assert first["Auto-Submitted"] == "auto-generated"
    assert first["X-VoiceFox-Event-Type"] == "voicefox.task.failed"
    assert first.get_content_type() == "multipart/alternative"
    text, html = parts(first)
    assert message.headline in text and "ステータス: 実行中 → 異常停止" in text
    assert '<html lang="ja">' in html and "https://console.example/tasks/1001" in html


async def test_the_subject_is_rfc_2047_encoded_and_the_parts_are_utf_8(mailbox: Mailbox) -> None:
    await notifier(settings(mailbox.port), language="zh-Hans").send(event_of(EventType.FINISHED, name="春季续费提醒"))
    raw = mailbox.mails[0].as_bytes()
    assert b"Subject: =?utf-8?" in raw  # the wire form: ASCII only
    assert "春季续费提醒" in mailbox.mails[0]["Subject"]
    assert all(part.get_content_charset() == "utf-8" for part in mailbox.mails[0].iter_parts())


async def test_text_from_the_api_is_escaped_in_the_html_and_kept_on_one_line_in_the_subject(mailbox: Mailbox) -> None:
    name = '<script>alert("x")</script> & <b>VIP</b>\\nline two\r\nBcc: evil@example.com'
    await notifier(settings(mailbox.port)).send(event_of(EventType.FAILED, name=name))
    mail = mailbox.mails[0]
    assert "\n" not in mail["Subject"] and mail["Bcc"] is None
    assert mailbox.envelopes[0][1] == ["ops@example.com"]
    text, html = parts(mail)
    assert "<script>" in text  # the text part shows it as written
    assert "<script>" not in html and "<b>VIP</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;VIP&lt;/b&gt;" in html


async def test_a_long_summary_is_cut_and_the_mail_still_goes(mailbox: Mailbox) -> None:
    event = event_of(EventType.FINISHED)
    event.data["task"]["summary"] = "長" * 50_000
    await notifier(settings(mailbox.port)).send(event)
    text, html = parts(mailbox.mails[0])
    assert "長" * 9_999 + "…" in text and "長" * 10_000 not in text
    assert "長" * 9_999 + "…" in html and "長" * 10_000 not in html


# -- authentication and TLS ----------------------------------------------------------------------------------------


async def test_starttls_with_auth_delivers(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    box = Mailbox()
    box.logins = {"watcher": "correct horse"}
    async with smtp_server(box, starttls=server_tls):
        config = settings(box.port, tls="starttls", username="watcher", password="correct horse")
        await notifier(config, tls=client_tls).send(event_of(EventType.FINISHED))
    assert box.authenticated == ["watcher"]
    assert len(box.mails) == 1


async def test_a_wrong_password_is_permanent_and_never_shown(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    box = Mailbox()
    box.logins = {"watcher": "correct horse"}
    async with smtp_server(box, starttls=server_tls):
        config = settings(box.port, tls="starttls", username="watcher", password="battery staple")
        with pytest.raises(DeliveryError) as info:
            await notifier(config, tls=client_tls).send(event_of(EventType.FINISHED))
    assert info.value.permanent
    assert "ops-mail" in str(info.value) and "535" in str(info.value) and "authentication failed" in str(info.value)
    assert "battery staple" not in str(info.value)
    assert box.mails == []


async def test_tls_from_the_first_byte_delivers(server_tls: ssl.SSLContext, client_tls: ssl.SSLContext) -> None:
    async with smtp_server(Mailbox(), implicit_tls=server_tls) as box:
        await notifier(settings(box.port, tls="tls"), tls=client_tls).send(event_of(EventType.FINISHED))
    assert len(box.mails) == 1


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_temporary_and_says_so(server_tls: ssl.SSLContext, mode: str) -> None:
    box = Mailbox()
    implicit, upgrade = (server_tls, None) if mode == "tls" else (None, server_tls)
    async with smtp_server(box, implicit_tls=implicit, starttls=upgrade):
        with pytest.raises(DeliveryError) as info:
            # The system's trust store, which knows nothing of the throwaway CA.
            await notifier(settings(box.port, tls=mode), tls=ssl.create_default_context()).send(
                event_of(EventType.FINISHED)
            )
    assert not info.value.permanent
    assert "TLS failed (TLS certificate not trusted)" in str(info.value)
    assert box.mails == []


async def test_starttls_asked_for_but_not_offered_is_temporary_and_never_falls_back_to_plain_text(
    mailbox: Mailbox, client_tls: ssl.SSLContext
) -> None:
    with pytest.raises(DeliveryError) as info:
        await notifier(settings(mailbox.port, tls="starttls"), tls=client_tls).send(event_of(EventType.FINISHED))
    assert not info.value.permanent
    assert "STARTTLS" in str(info.value)
    assert mailbox.mails == []


# -- what the server answers ----------------------------------------------------------------------------------------


async def test_a_recipient_refused_with_550_is_permanent_with_the_reply(mailbox: Mailbox) -> None:
    mailbox.refuse["ops@example.com"] = "550 5.1.1 <ops@example.com>: Recipient address rejected: User unknown"
    with pytest.raises(DeliveryError) as info:
        await notifier(settings(mailbox.port)).send(event_of(EventType.FAILED))
    assert info.value.permanent
    assert "ops-mail (smtp 127.0.0.1:" in str(info.value)
    assert "ops@example.com: 550 5.1.1" in str(info.value) and "User unknown" in str(info.value)


async def test_a_recipient_refused_for_now_is_temporary(mailbox: Mailbox) -> None:
    mailbox.refuse["ops@example.com"] = "450 4.2.1 Mailbox busy, try again later"
    with pytest.raises(DeliveryError) as info:
        await notifier(settings(mailbox.port)).send(event_of(EventType.FAILED))
    assert not info.value.permanent


async def test_one_recipient_refused_of_two_is_a_delivery_and_is_logged(mailbox: Mailbox) -> None:
    """The other got it: sending again would give them a second copy."""
    mailbox.refuse["gone@example.com"] = "550 5.1.1 User unknown"
    config = settings(mailbox.port, to=["ops@example.com", "gone@example.com"])
    with structlog.testing.capture_logs() as logs:
        await notifier(config).send(event_of(EventType.FAILED))
    assert mailbox.envelopes == [("watcher@example.com", ["ops@example.com"])]
    refused = [log for log in logs if log["event"] == "email.recipients_refused"]
    assert refused[0]["refused"] == {"gone@example.com": "550 5.1.1 User unknown"}


async def test_a_server_answering_451_is_temporary(mailbox: Mailbox) -> None:
    mailbox.data_reply = "451 4.3.0 Temporary local problem, try again later"
    with pytest.raises(DeliveryError) as info:
        await notifier(settings(mailbox.port)).send(event_of(EventType.FAILED))
    assert not info.value.permanent
    assert "451 4.3.0 Temporary local problem" in str(info.value)


async def test_a_server_refusing_the_data_with_554_is_permanent(mailbox: Mailbox) -> None:
    mailbox.data_reply = "554 5.6.0 Message rejected as spam"
    with pytest.raises(DeliveryError) as info:
        await notifier(settings(mailbox.port)).send(event_of(EventType.FAILED))
    assert info.value.permanent


async def test_a_server_that_is_down_is_temporary() -> None:
    with pytest.raises(DeliveryError) as info:
        await notifier(settings(closed_port())).send(event_of(EventType.FAILED))
    assert not info.value.permanent
    assert "cannot connect (ConnectionRefusedError)" in str(info.value)


# -- settings -----------------------------------------------------------------------------------------------------

MINIMAL = {"api": {"token": "t"}, "watch": {"tasks": [1]}, "store": {"path": "/tmp/s.db"}}


def load(notifier_entry: dict[str, Any], env: dict[str, str] | None = None) -> config_mod.Config:
    return config_mod.validate({**MINIMAL, "notifiers": [notifier_entry]}, source="test", env=env or {})


MAIL = {"kind": "email", "name": "mail", "host": "smtp.example.com", "from": "w@example.com", "to": ["o@example.com"]}


@pytest.mark.parametrize(("tls", "port"), [("starttls", 587), ("tls", 465), ("none", 25)])
def test_the_port_defaults_by_tls(tls: str, port: int) -> None:
    entry = MAIL | {"tls": tls, "host": "127.0.0.1"}
    email = load(entry).notifiers[0]
    assert isinstance(email, EmailNotifierConfig)
    assert email.effective_port == port
    assert email.sender == "w@example.com"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            MAIL | {"tls": "none", "username": "u", "password": "p"},
            'notifiers[0]: tls = "none" would send the password',
        ),
        (MAIL | {"username": "u"}, "notifiers[0]: username and password: give both"),
        (MAIL | {"to": ["not an address"]}, 'notifiers[0].to[0]: "not an address" is not an email address'),
        (MAIL | {"from": "w@"}, 'notifiers[0].from: "w@" is not an email address'),
        (MAIL | {"to": []}, "notifiers[0].to:"),
        ({k: v for k, v in MAIL.items() if k != "from"}, "notifiers[0].from: is required"),
        (MAIL | {"tls": "ssl"}, "notifiers[0].tls:"),
        (MAIL | {"host": "smtp://smtp.example.com"}, "notifiers[0].host: must be the SMTP server"),
    ],
)
def test_a_bad_email_entry_names_its_key(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(entry)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_plain_text_to_a_relay_on_this_host_is_quiet_and_elsewhere_warned_about() -> None:
    with structlog.testing.capture_logs() as logs:
        EmailNotifier(load(MAIL | {"tls": "none", "host": "::1", "username": "u", "password": "p"}).notifiers[0])  # type: ignore[arg-type]
        EmailNotifier(load(MAIL | {"tls": "none"}).notifiers[0])  # type: ignore[arg-type]
    assert [(log["event"], log["host"]) for log in logs] == [("email.tls_disabled", "smtp.example.com")]


def test_the_password_is_a_secret_read_from_a_file_and_redacted(tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text("s3cret-smtp-pass\n")
    raw = {**MINIMAL, "notifiers": [MAIL | {"username": "u", "password_file": "smtp-password"}]}
    cfg = config_mod.validate(raw, source="test", env={}, base_dir=tmp_path)
    email = cfg.notifiers[0]
    assert isinstance(email, EmailNotifierConfig) and email.password is not None
    assert email.password.get_secret_value() == "s3cret-smtp-pass"
    assert "s3cret" not in repr(cfg)
    assert "s3cret-smtp-pass" in config_mod.secret_values(cfg)
