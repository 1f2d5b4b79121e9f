"""TLS for real on 127.0.0.1: an untrusted certificate is an error (never an event); turning verification off works."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
import trustme
from structlog.testing import capture_logs

from watcher import config as config_mod
from watcher.cli_run import open_components
from watcher.errors import DeliveryError
from watcher.httpserver import serve
from watcher.model import EventType
from watcher.notify.webhook import WebhookNotifier
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_notify import event_of

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server_tls() -> ssl.SSLContext:
    """A server context whose certificate no client trusts (a throwaway CA)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
async def https_simulator(server_tls: ssl.SSLContext) -> AsyncIterator[tuple[Simulator, str]]:
    sim = Simulator()
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: sim.serve(ssl_context=server_tls, task_status=task_status))
        yield sim, f"https://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


@pytest.fixture
async def https_receiver(server_tls: ssl.SSLContext) -> AsyncIterator[Receiver]:
    rcv = Receiver()
    async with anyio.create_task_group() as tg:
        port = await tg.start(lambda task_status: serve(rcv.handle, ssl_context=server_tls, task_status=task_status))
        rcv.url = f"https://127.0.0.1:{port}/hook"
        yield rcv
        tg.cancel_scope.cancel()


def tls_config(api_url: str, token: str, hook_url: str, store: Path, verify: bool) -> config_mod.Config:
    return config_mod.validate(
        {
            "api": {"base_url": api_url, "token": token, "timeout": "2s", "verify_tls": verify},
            "watch": {"tasks": [1], "interval": "1s"},
            "store": {"path": str(store)},
            "delivery": {"verify_tls": verify},
            "notifiers": [{"kind": "webhook", "name": "hook", "url": hook_url}],
        },
        source="test",
    )


async def test_an_untrusted_api_certificate_fails_the_poll_and_invents_nothing(
    https_simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = https_simulator
    sim.add_task(1, status="running")
    config = tls_config(url, sim.token, receiver.url, tmp_path / "s.db", verify=True)
    async with open_components(config) as parts:
        with capture_logs() as logs:
            assert not await parts.daemon.poll(1)
        await parts.dispatcher.drain()
    assert receiver.requests == []
    assert any(log["event"] == "poll.failed" and "TLS certificate not trusted" in log["error"] for log in logs)


async def test_verification_off_is_explicit_logged_and_works(
    https_simulator: tuple[Simulator, str], https_receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = https_simulator
    sim.add_task(1, status="running")
    config = tls_config(url, sim.token, https_receiver.url, tmp_path / "s.db", verify=False)
    with capture_logs() as logs:
        async with open_components(config) as parts:
            assert await parts.daemon.poll(1)
            await parts.dispatcher.drain()
    assert [b["type"] for b in https_receiver.bodies()] == ["voicefox.task.observed"]
    warned = {log["section"] for log in logs if log["event"] == "tls.verification_disabled"}
    assert warned == {"api", "delivery"}


async def test_an_untrusted_receiver_certificate_is_a_temporary_delivery_error(https_receiver: Receiver) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as info:
            await WebhookNotifier("hook", https_receiver.url, http).send(event_of(EventType.FINISHED))
    assert not info.value.permanent  # a certificate can be fixed; the outbox keeps the event meanwhile
    assert "TLS certificate not trusted" in str(info.value)
    assert https_receiver.requests == []
