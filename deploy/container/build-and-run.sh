#!/usr/bin/env bash
# Build the Dockerfile and run the image for real with podman, then prove: it runs as non-root, answers its
# HEALTHCHECK, and exits 0 on SIGTERM as PID 1 within the grace period. Prints a summary line per check and the
# image size. Exit 0 only if every check passed.
#
# Where no registry is reachable, the base image is built locally (debootstrap --variant=minbase bookworm +
# python3) and passed as PYTHON_IMAGE. Needs root, podman, runc and debootstrap (Debian: apt-get install podman
# runc debootstrap). Usage: deploy/container/build-and-run.sh [--keep]
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=${BASE_IMAGE:-localhost/voicefox-python-base:bookworm}
IMAGE=${IMAGE:-localhost/voicefox-watcher:test}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA=/etc/ssl/certs/ca-certificates.crt
# This host's cgroups defeat crun; runc works. Its default limits are too tight for pip.
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)
work=$(mktemp -d)
name="vfw-test-$$"
cleanup() {
    "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true
    [ -n "${sim_pid:-}" ] && kill "$sim_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '%s\n' "$*"; }

if ! "${PODMAN[@]}" image exists "$BASE"; then
    say "base: building $BASE with debootstrap (minbase bookworm + python3)"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm \
        "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; exit 1; }
    tar -C "$work/rootfs" -c . | "${PODMAN[@]}" import --change 'CMD ["python3"]' - "$BASE" >/dev/null
    rm -rf "$work/rootfs"
fi

say "build: $IMAGE from $BASE"
build_args=(--build-arg "PYTHON_IMAGE=$BASE")
[ -f "$CA" ] && build_args+=(--build-arg "PIP_CERT=$CA" --volume "$CA:$CA:ro")
# --no-cache: this buildah reuses a cached COPY layer after the copied files changed. --format docker: the OCI
# image format has no HEALTHCHECK.
"${PODMAN[@]}" build --no-cache --format docker "${LIMITS[@]}" "${build_args[@]}" -t "$IMAGE" -f Dockerfile . >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log"; exit 1; }
size=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
say "image: $IMAGE, $((size / 1024 / 1024)) MiB"

# A simulator on the host, reached through the host network.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port)
http_port=$(free_port)
python3 -m venv "$work/venv" >/dev/null && "$work/venv/bin/pip" install -q . >/dev/null
"$work/venv/bin/watcher" simulate --port "$sim_port" >"$work/sim.log" 2>&1 &
sim_pid=$!
cat >"$work/watcher.toml" <<TOML
[api]
base_url = "http://127.0.0.1:$sim_port"
token = "\${VOICEFOX_TOKEN}"
[watch]
tasks = [1001, 1002, 1003]
interval = "1s"
[http]
listen = "127.0.0.1:$http_port"
[[notifiers]]
kind = "log"
name = "log"
TOML
chmod 644 "$work/watcher.toml"

"${PODMAN[@]}" run -d "${LIMITS[@]}" --name "$name" --network host \
    -e VOICEFOX_TOKEN=sim-token-0123456789 \
    -v "$work/watcher.toml:/etc/voicefox-watcher/watcher.toml:ro,Z" \
    "$IMAGE" >/dev/null

failures=0
check() { if "$@"; then say "ok: $label"; else say "FAILED: $label"; failures=$((failures + 1)); fi; }

uid=$("${PODMAN[@]}" exec "$name" id -u)
label="runs as non-root (uid $uid)"; check test "$uid" != 0

healthy=1
for _ in $(seq 1 30); do
    if "${PODMAN[@]}" healthcheck run "$name" >/dev/null 2>&1; then healthy=0; break; fi
    sleep 1
done
label="answers its HEALTHCHECK (watcher health -> /healthz)"; check test "$healthy" = 0

label="polls the simulator (task.notified in its log)"
check bash -c "'${PODMAN[0]}' logs '$name' 2>&1 | grep -q task.notified"

start=$(date +%s)
"${PODMAN[@]}" stop -t 20 "$name" >/dev/null
took=$(( $(date +%s) - start ))
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$name")
label="exits $code on SIGTERM as PID 1 in ${took}s (grace 20s)"; check test "$code" = 0 -a "$took" -lt 20

label="logged watcher.stopped"
check bash -c "'${PODMAN[0]}' logs '$name' 2>&1 | grep -q watcher.stopped"

[ "${1:-}" = "--keep" ] || "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
say "$([ $failures = 0 ] && echo PASSED || echo "FAILED ($failures)"): image ${size} bytes"
exit $failures
