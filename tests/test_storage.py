"""Storage faults for real: a full disk and a read-only filesystem (tmpfs mounts), a corrupt file, a missing directory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import run, write_config
from .test_daemon import components, make_config, types

pytestmark = pytest.mark.anyio


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own, to fill up or make read-only (needs root; skipped with the reason otherwise)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem until writes fail; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_loses_no_transition(
    simulator: tuple[Simulator, str], receiver: Receiver, tiny_fs: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running", progress=10)
    config = make_config(url, sim.token, receiver.url, tiny_fs / "state.db", [1])
    async with components(config) as (daemon, dispatcher, store):
        assert await daemon.poll(1)
        await dispatcher.drain()
        filler = fill(tiny_fs)
        sim.set(1, status="stop.abnormal")
        with capture_logs() as logs:
            for _ in range(3):
                await daemon.poll(1)  # detected, but cannot be recorded: nothing is sent, nothing forgotten
        assert any(log["event"] == "store.write_failed" and "full" in log["error"] for log in logs)
        assert store.load_states()[1].snapshot.status == "running"
        filler.unlink()
        assert await daemon.poll(1)
        await dispatcher.drain()
    assert types(receiver) == [("1", "voicefox.task.observed"), ("1", "voicefox.task.failed")]


async def test_a_read_only_store_is_refused_at_start_with_a_clear_message(
    simulator: tuple[Simulator, str], receiver: Receiver, tiny_fs: Path, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    cfg.write_text(cfg.read_text().replace('path = "state.db"', f'path = "{tiny_fs}/state.db"'))
    assert (await run(["once", "-c", str(cfg)], token=sim.token)).returncode == 0
    await anyio.run_process(["mount", "-o", "remount,ro", str(tiny_fs)])
    result = await run(["run", "-c", str(cfg)], token=sim.token)
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert b"state.db" in result.stderr
    assert b"read-only" in result.stderr.lower() or b"readonly" in result.stderr.lower()


async def test_a_corrupt_store_is_refused_at_start_with_a_clear_message(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "w.toml", "http://127.0.0.1:9", "t", "http://127.0.0.1:9/h", [1])
    (tmp_path / "state.db").write_bytes(b"garbage " * 1000)
    result = await run(["run", "-c", str(cfg)], token="token-value")
    assert result.returncode == 1
    assert b"cannot open the state database" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_a_missing_store_directory_is_created(
    simulator: tuple[Simulator, str], receiver: Receiver, tmp_path: Path
) -> None:
    sim, url = simulator
    sim.add_task(1, status="running")
    cfg = write_config(tmp_path / "w.toml", url, sim.token, receiver.url, [1])
    cfg.write_text(cfg.read_text().replace('path = "state.db"', 'path = "deep/er/state.db"'))
    result = await run(["once", "-c", str(cfg)], token=sim.token)
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "deep" / "er" / "state.db").exists()
