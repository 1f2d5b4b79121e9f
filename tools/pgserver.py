"""A throwaway PostgreSQL server on 127.0.0.1, for the tests (tests/conftest.py) and the benchmark (bench/).

It refuses to run as root, so as root it runs as the `postgres` user, in a directory of its own under the system's
temporary directory (not pytest's: that one is private to root). Stopped and removed on the way out.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def server_binaries() -> Path | None:
    """Where initdb and pg_ctl are (Debian's newest /usr/lib/postgresql/N/bin, else on PATH), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def temporary_postgres(bin_dir: Path, *, fsync: bool = False) -> Iterator[str]:
    """Start a server with a database `watcher` owned by the user `watcher` (trust authentication on 127.0.0.1)
    and yield its URL; `fsync`: as durable as a production server (the tests turn it off: they crash processes,
    not machines)."""
    data = Path(tempfile.mkdtemp(prefix="voicefox-watcher-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = data / "cluster"
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(cluster), "-U", "watcher", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data}"
    options += "" if fsync else " -c fsync=off"
    subprocess.run(
        [*as_user, str(bin_dir / "pg_ctl"), "-D", str(cluster), "-o", options, "-l", str(data / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [*as_user, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "watcher", "watcher"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://watcher@127.0.0.1:{port}/watcher"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(cluster), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(data, ignore_errors=True)
