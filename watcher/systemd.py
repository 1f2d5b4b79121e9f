"""systemd's notify protocol (sd_notify): READY=1, STATUS=..., WATCHDOG=1, STOPPING=1, RELOADING=1.

A no-op outside systemd (no $NOTIFY_SOCKET). Implemented here, not as a dependency: it is one datagram on a Unix
socket, and the protocol is stable and documented (sd_notify(3)).
"""

from __future__ import annotations

import os
import socket
import time

import structlog

_log = structlog.get_logger("watcher.systemd")


class Notifier:
    """Sends state changes to the service manager, if there is one."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # "@name" is a Linux abstract socket: its first byte is NUL on the wire.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval = int(usec) / 1e6 / 2 if watchdog_for_us else None  # ping at half the timeout
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return bool(self._address)

    def send(self, *lines: str) -> None:
        """Send `KEY=value` lines; failures are logged, never raised (notification is best effort)."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(lines).encode())
        except OSError as exc:
            _log.warning("systemd.notify_failed", error=exc.strerror or str(exc))

    def ping(self) -> None:
        """WATCHDOG=1, at most every half watchdog period; call it from the main loop only while it is healthy."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
