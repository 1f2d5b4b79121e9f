"""structlog setup: a pipeline of small processors, JSON lines off a terminal, console output on one."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

REDACTED = "[REDACTED]"

# Keys whose values are secrets or personal data wherever they appear in a log call.
SECRET_KEYS = frozenset(
    {"token", "api_token", "authorization", "secret", "websockettoken", "websocketurl", "numbers", "email", "url"}
)


class Redact:
    """Replace secret values (by key, and by value anywhere in a string) before anything is rendered."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short strings would redact innocent text; real secrets are long.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            event_dict[key] = self._clean(key, value)
        return event_dict

    def _clean(self, key: str, value: Any) -> Any:
        if key.lower().replace("-", "_") in SECRET_KEYS and value is not None:
            return REDACTED
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, v) for v in value]
        return value


LogFormat = Literal["auto", "json", "console"]


def configure(
    level: str = "info", fmt: LogFormat = "auto", secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Configure structlog for the process: level, rendering and the redaction of `secrets`."""
    out = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
        # A terminal shows its own encoding: a name it cannot show becomes \u escapes instead of a crash.
        _reconfigure(out, encoding=None)
    else:
        # JSON lines are UTF-8 whatever the locale says, so `grep 東京` finds 東京 (not \u6771\u4eac), also under a
        # C/POSIX locale or an ASCII stdout; a lone surrogate becomes a \udcxx escape, which is still valid JSON.
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
        _reconfigure(out, encoding="utf-8")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            Redact(secrets),  # after format_exc_info, so a rendered traceback is scrubbed too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def _reconfigure(out: TextIO, encoding: str | None) -> None:
    """Make a real text stream write `encoding` (None: keep its own) and escape what it cannot encode."""
    if isinstance(out, io.TextIOWrapper):  # not a StringIO (tests): that takes text and encodes nothing
        out.reconfigure(encoding=encoding or out.encoding, errors="backslashreplace")
