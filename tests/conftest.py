"""Shared fixtures: the anyio backend, a simulator served on 127.0.0.1, a recording webhook receiver, and a real SMTP
server (aiosmtpd) with a recording mailbox."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tools.pgserver import server_binaries, temporary_postgres
from watcher.httpserver import Request, Response, serve
from watcher.simulator import Simulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.replies: list[Response] = []  # consumed first; then `default`
        self.default = Response(204, b"")
        self.url = ""
        self.hold: anyio.Event | None = None  # when set, every request waits for it before it is answered
        self._arrived = anyio.Event()

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        self._arrived.set()
        self._arrived = anyio.Event()
        if self.hold is not None:
            await self.hold.wait()
        return self.replies.pop(0) if self.replies else self.default

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.requests]

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        """Wait until at least `count` requests arrived (fail after `within` seconds)."""
        with anyio.fail_after(within):
            while len(self.requests) < count:
                await self._arrived.wait()


@pytest.fixture
async def simulator() -> AsyncIterator[tuple[Simulator, str]]:
    """A simulator on a free port; yields it and its base URL."""
    sim = Simulator()
    async with anyio.create_task_group() as tg:
        port = await tg.start(sim.serve)
        yield sim, f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A recording webhook receiver on a free port."""
    rcv = Receiver()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, rcv.handle)
        rcv.url = f"http://127.0.0.1:{port}/hook"
        yield rcv
        tg.cancel_scope.cancel()


class Mailbox:
    """What a real SMTP server (aiosmtpd) on 127.0.0.1 received; it answers from a script.

    `refuse` maps a recipient to the reply that refuses it ("550 5.1.1 ..."); `data_reply` answers DATA instead of
    accepting the mail ("451 4.3.0 ..."); `logins` are the username/password pairs AUTH accepts.
    """

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []  # (MAIL FROM, RCPT TO) of each accepted mail
        self.refuse: dict[str, str] = {}
        self.data_reply: str | None = None
        self.data_replies: list[str] = []  # one-off answers to DATA, consumed before `data_reply`
        self.logins: dict[str, str] = {}
        self.authenticated: list[str] = []
        self.port = 0

    async def handle_RCPT(  # aiosmtpd calls its hooks by these names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        if self.data_reply is not None:
            return self.data_reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from is not None
        mail = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        self.mails.append(mail)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator: accept the configured logins only."""
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if self.logins.get(login) == password:
                self.authenticated.append(login)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


@asynccontextmanager
async def smtp_server(
    mailbox: Mailbox, *, implicit_tls: ssl.SSLContext | None = None, starttls: ssl.SSLContext | None = None
) -> AsyncIterator[Mailbox]:
    """Serve `mailbox` on a free port of 127.0.0.1: plain, STARTTLS (required) or TLS from the first byte."""
    loop = asyncio.get_running_loop()

    def protocol() -> SMTP:
        return SMTP(
            mailbox,
            hostname="mail.test",
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=mailbox.authenticate if mailbox.logins else None,
            auth_require_tls=False,  # the plain server's AUTH is tested too (to a relay on this host)
            loop=loop,
        )

    server = await loop.create_server(protocol, "127.0.0.1", 0, ssl=implicit_tls)
    mailbox.port = server.sockets[0].getsockname()[1]
    try:
        yield mailbox
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    """A plain SMTP server on a free port of 127.0.0.1 (a relay on this host), recording what it accepts."""
    async with smtp_server(Mailbox()) as box:
        yield box


# -- a real PostgreSQL server on 127.0.0.1, started by the tests ------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of our own on a free port of 127.0.0.1 for the session (or $WATCHER_TEST_POSTGRES_URL).

    Without the server's binaries the tests that need it skip, saying how to install them; in CI (CI=true) they fail
    instead: there they must run.
    """
    if url := os.environ.get("WATCHER_TEST_POSTGRES_URL"):
        yield url
        return
    bin_dir = server_binaries()
    if bin_dir is None:
        message = "no PostgreSQL server binaries (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run the PostgreSQL tests")
        pytest.skip(message)
    with temporary_postgres(bin_dir) as url:
        yield url


@pytest.fixture
def pg(postgres_url: str) -> str:
    """A PostgreSQL URL whose watcher schema starts empty, with a password the server does not ask for (so that
    tests can check it is shown nowhere). Not async: async tests ask for it with request.getfixturevalue."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS voicefox_watcher CASCADE")
    return postgres_url.replace("watcher@", "watcher:pg-PASSWORD-secret@")


def use_postgres(config: Path, url: str) -> Path:
    """A config file written by tests/test_cli.write_config, moved to a PostgreSQL store."""
    config.write_text(config.read_text().replace('[store]\npath = "state.db"', f'[store]\nurl = "{url}"'))
    return config
