"""Field types and checks shared by the configuration and the notifier kinds that declare their own settings.

(A notifier kind's settings live in its own module, `watcher/notify/<kind>.py`, and are checked by these; config.py
assembles them. Keeping the shared pieces here lets both import them without importing each other.)
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import zoneinfo
from typing import Annotated, Any
from urllib.parse import urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .i18n import LANGUAGES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
MAX_DURATION = 366 * 86400.0


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_duration(value: Any) -> float:
    """ "500ms", "30s", "5m", "2h", "1d" or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        else:
            seconds = None
    except OverflowError:
        seconds = math.inf
    if seconds is None:
        shown = _shown(value)
        raise ValueError(f'{shown} is not a duration (write e.g. "500ms", "30s", "5m", "2h" or a number of seconds)')
    shown = _shown(value)
    if math.isnan(seconds):
        raise ValueError(f"{shown} is not a duration")
    if seconds > MAX_DURATION:
        raise ValueError(f"{shown} is longer than a year; use a shorter duration")
    if seconds < 0:
        raise ValueError(f"{shown} is negative; a duration must be 0 or more")
    return seconds


Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]


def check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - reading it validates it
    except ValueError:
        raise ValueError("has an invalid port (use 1-65535)") from None
    if parts.port == 0:
        raise ValueError("has an invalid port (use 1-65535)")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain spaces")
    return value


def check_secret_url(value: SecretStr) -> SecretStr:
    check_http_url(value.get_secret_value())
    return value


HttpUrl = Annotated[str, pydantic.AfterValidator(check_http_url)]
SecretHttpUrl = Annotated[SecretStr, pydantic.AfterValidator(check_secret_url)]


def check_whsec(value: SecretStr | None) -> SecretStr | None:
    import base64
    import binascii

    if value is None:
        return None
    raw = value.get_secret_value()
    try:
        key = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError("is too short: use at least 16 random bytes, e.g. whsec_$(openssl rand -base64 32)")
    return value


def check_token(value: SecretStr) -> SecretStr:
    token = value.get_secret_value()
    if not token.strip():
        raise ValueError("must not be empty")
    # It goes into an HTTP header: a stray newline from an environment variable or a non-ASCII character would
    # otherwise fail every request with an obscure protocol error.
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError(
            "must be printable ASCII without spaces or newlines (check the variable or file it comes from)"
        )
    return value


def check_event_patterns(patterns: list[str] | None) -> list[str] | None:
    from .model import EventType  # the event names are the model's; imported here to keep config import-light

    if patterns is None:
        return None
    known = [t.value for t in EventType]
    for pattern in patterns:
        glob = pattern.removeprefix("!")
        if not any(fnmatch.fnmatchcase(t, glob) for t in known):
            raise ValueError(f"{pattern!r} matches no event type (known: {', '.join(known)})")
    return patterns


def check_timezone(value: str) -> str:
    if value:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a directory
            raise ValueError(f'{json.dumps(value)} is not a time zone (e.g. "Asia/Tokyo", "UTC")') from None
    return value


class Section(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default); settings are immutable.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _check_language(value: str) -> str:
    """A supported language, also as people tag it for a country: zh-CN and zh-SG are zh-Hans, zh-TW and zh-HK
    zh-Hant, ja-JP ja, en-US en."""
    canonical = {language.lower(): language for language in LANGUAGES}
    tag = value.strip().replace("_", "-").lower()
    if tag in canonical:
        return canonical[tag]
    if tag in _ALIASES:
        return _ALIASES[tag]
    if tag.split("-")[0] in ("en", "ja"):
        return tag.split("-")[0]
    raise ValueError(f"{json.dumps(value)} is not a supported language (use one of: {', '.join(LANGUAGES)})")


_ALIASES = {
    "zh-cn": "zh-Hans",
    "zh-sg": "zh-Hans",
    "zh": "zh-Hans",
    "zh-tw": "zh-Hant",
    "zh-hk": "zh-Hant",
    "zh-mo": "zh-Hant",
}
Language = Annotated[str, pydantic.AfterValidator(_check_language)]


def _check_matchers(texts: list[str]) -> list[str]:
    from .matchers import parse_matchers  # (a pure module; imported here to keep this one import-light)

    parse_matchers(texts)
    return texts


def _zero_or_at_least_a_second(seconds: float) -> float:
    if 0 < seconds < 1:
        raise ValueError('must be 0 (no reminders) or at least 1 second (people want hours: "1h")')
    return seconds


class NotifierBase(Section):
    """What every `[[notifiers]]` entry has; a kind adds its own keys (and its `kind` literal) in its module."""

    kind: str
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    events: Annotated[list[str] | None, pydantic.AfterValidator(check_event_patterns)] = None  # None: kind default
    # Several events due at once go out as one message listing them (a digest); None: the kind's default (chat and
    # email: yes; a webhook: one event per request unless it opts in).
    digest: Annotated[bool | None, Field(strict=True)] = None
    # Routing and noise (README "Routing and noise"): which tasks' events by their labels, Alertmanager's matchers
    # ('team="sales"', 'customer=~"acme|globex"', 'team!="qa"'); all must match; none: every task.
    matchers: Annotated[list[str], pydantic.AfterValidator(_check_matchers)] = Field(default_factory=list)
    # Whether this receiver hears that a problem it was told of is over (resumed, unstalled, reappeared, recovered).
    send_resolved: Annotated[bool, Field(strict=True)] = True
    # Remind of a problem that lasts (failed, timed out, stopped, stalled, missing) this often; 0: never. At most
    # `repeat_max` reminders per problem (0: while it lasts).
    repeat_every: Annotated[Duration, pydantic.AfterValidator(_zero_or_at_least_a_second)] = 0.0
    repeat_max: Annotated[int, Field(ge=0, le=1000, strict=True)] = 0
    # Quiet hours: events are held (never dropped) while one of these windows is on, and go out when it ends, as one
    # digest if there are several; e.g. [{days = "mon-fri", from = "20:00", to = "08:00"}, {days = "sat-sun"}].
    quiet: list[dict[str, Any]] = Field(default_factory=list)
    # The zone quiet hours are written in; "": `[watch] timezone` (one of the two is needed for quiet hours).
    quiet_timezone: Annotated[str, pydantic.AfterValidator(check_timezone)] = ""
    # Event types quiet hours do not hold (glob patterns, as `events`).
    urgent: Annotated[list[str], pydantic.AfterValidator(check_event_patterns)] = Field(default_factory=list)
    # How long the first event of a burst waits for others to join it in one message; 0: no wait.
    group_wait: Annotated[Duration, Field(le=3600)] = 0.0
    # The language this receiver's people read; None: `[messages] language`.
    language: Language | None = None
    # Your own words (Jinja2, sandboxed; see watcher/notify/templates.py for the variables): the title replaces the
    # built-in headline, the body the facts and details. None: the built-in message.
    title_template: str | None = None
    body_template: str | None = None

    @pydantic.field_validator("title_template", "body_template")
    @classmethod
    def _compiles(cls, source: str | None) -> str | None:
        if source is not None:
            from .notify.templates import TemplateError, check_syntax  # (imported here: notify imports this module)

            try:
                check_syntax(source)
            except TemplateError as exc:
                raise ValueError(str(exc)) from None
        return source


def check_task_url(value: str) -> str:
    """`[messages] task_url`: an http(s) URL with "{id}" where the task id goes, or ""."""
    if value:
        if "{id}" not in value:
            raise ValueError('must contain {id} where the task id goes, e.g. "https://console.example/tasks/{id}"')
        check_http_url(value.replace("{id}", "1"))
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine (127.0.0.0/8, ::1, localhost): nothing sent to it crosses a network."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
