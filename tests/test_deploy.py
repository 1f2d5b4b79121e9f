"""Deployment files: the systemd units verified and rated by systemd-analyze, sd_notify spoken for real."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from watcher import config as config_mod
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import WATCHER, write_config

ROOT = Path(__file__).parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/voicefox-watcher/bin/watcher"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """The units as shipped, with ExecStart pointing at this test run's installed `watcher` (verify checks it exists)."""
    for unit in SYSTEMD.glob("voicefox-watcher*"):
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, WATCHER))
    return tmp_path


@needs_systemd_analyze
@pytest.mark.parametrize(
    "unit", ["voicefox-watcher.service", "voicefox-watcher-once.service", "voicefox-watcher-once.timer"]
)
def test_systemd_analyze_verify_prints_nothing(units: Path, unit: str) -> None:
    """`verify` exits 0 on many mistakes and only prints them: any output is a failure."""
    import subprocess

    result = subprocess.run(["systemd-analyze", "verify", unit], cwd=units, capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
@pytest.mark.parametrize("unit", ["voicefox-watcher.service", "voicefox-watcher-once.service"])
def test_systemd_analyze_security_rates_the_service_ok(units: Path, unit: str) -> None:
    import subprocess

    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(units / unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
    assert match.group(2) == "OK"


def test_the_units_keep_the_promises_the_readme_makes() -> None:
    service = (SYSTEMD / "voicefox-watcher.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=voicefox-watcher",
        "LoadCredential=voicefox-token:",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"ExecStart={INSTALLED} run",
    ):
        assert f"\n{line}" in service, line


def test_the_systemd_config_example_is_valid_with_a_credential(tmp_path: Path) -> None:
    (tmp_path / "voicefox-token").write_text("token-from-a-credential\n")
    cfg = config_mod.load(SYSTEMD / "watcher.toml", env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert cfg.api.token.get_secret_value() == "token-from-a-credential"
    assert str(cfg.store.path) == "/var/lib/voicefox-watcher/state.db"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket playing systemd's part of the notify protocol."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock


async def receive_until(sock: socket.socket, wanted: str, seen: list[str]) -> None:
    with anyio.fail_after(15):
        while not any(wanted in message for message in seen):
            await anyio.wait_readable(sock)
            seen.append(sock.recv(4096).decode())


@pytest.mark.anyio
@pytest.mark.skipif(sys.platform != "linux", reason="sd_notify is a Linux protocol")
async def test_the_daemon_speaks_sd_notify_ready_watchdog_reload_and_stopping(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path, notify_socket: socket.socket
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    environment = {
        **os.environ,
        "TEST_VOICEFOX_TOKEN": sim.token,
        "NOTIFY_SOCKET": notify_socket.getsockname(),
        "WATCHDOG_USEC": "2000000",
    }
    seen: list[str] = []
    async with await anyio.open_process([WATCHER, "run", "-c", str(cfg)], env=environment) as proc:
        try:
            await receive_until(notify_socket, "READY=1", seen)
            assert any("STATUS=watching 1 tasks" in m for m in seen)
            await receive_until(notify_socket, "WATCHDOG=1", seen)
            proc.send_signal(signal.SIGHUP)
            await receive_until(notify_socket, "RELOADING=1", seen)
            proc.send_signal(signal.SIGTERM)
            await receive_until(notify_socket, "STOPPING=1", seen)
            with anyio.fail_after(15):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
