"""TOML configuration -> validated, immutable settings; every problem is reported with its key path."""

from __future__ import annotations

import json
import os
import re
import tomllib
import zoneinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import pydantic
from pydantic import Field, SecretStr

from .errors import ConfigError
from .fields import (
    Duration,
    HttpUrl,
    Language,
    NotifierBase,
    check_task_url,
    check_timezone,
    check_token,
    is_loopback,
)
from .fields import Section as _Section
from .fields import parse_duration as parse_duration
from .i18n import DEFAULT_LANGUAGE
from .matchers import check_labels
from .notify.log import LogNotifierConfig as LogNotifierConfig  # the built-in kinds' settings, by their old
from .notify.registry import KINDS  # names here (each lives with its channel)
from .notify.slack import SlackNotifierConfig as SlackNotifierConfig
from .notify.webhook import WebhookNotifierConfig as WebhookNotifierConfig
from .quiet import QuietHours

DEFAULT_BASE_URL = "https://openapi.voicefox.ai"
DEFAULT_CONFIG_NAME = "watcher.toml"
CONFIG_ENV = "WATCHER_CONFIG"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ApiConfig(_Section):
    """`[api]`: where VoiceFox is and how to ask it."""

    base_url: HttpUrl = DEFAULT_BASE_URL
    token: Annotated[SecretStr, pydantic.AfterValidator(check_token)]
    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    # TLS certificate verification; turning it off is an explicit choice, logged at start.
    verify_tls: Annotated[bool, Field(strict=True)] = True
    # After this long without one successful poll, emit voicefox.watcher.api_unreachable (and api_recovered later).
    unreachable_after: Annotated[Duration, Field(gt=0)] = 300.0
    # HTTP transport under httpx: "aiohttp" (pip install 'voicefox-watcher[fast]') costs ~40 % less CPU per poll;
    # "auto" takes it when installed, else httpx's own.
    transport: Literal["auto", "httpx", "aiohttp"] = "auto"
    # Requests per second at most, shared by every poll (0: no limit until the API answers 429). A 429 halves
    # the rate in use; it recovers by one request per second each second.
    max_rps: Annotated[float, Field(ge=0, le=100000)] = 0.0


MAX_CONCURRENCY = 1000  # polls in flight at most, whatever [watch] concurrency says


TaskId = Annotated[int, Field(strict=True, gt=0, lt=2**63)]
MAX_TASK_ID = 2**63 - 1


def task_id(value: object) -> int:
    """A task id from JSON or a command line (an int, or a string of decimal digits); ValueError naming what is
    wrong otherwise. The one check of every id that comes from outside the config file (which `TaskId` checks)."""
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TASK_ID:
        raise ValueError(f"{str(value)[:40]!r} is not a task id: id must be a positive integer")
    return value


class TaskConfig(_Section):
    """A `[[watch.task]]` entry: one task with settings of its own."""

    id: TaskId
    # The zone this task's calling windows are written in, when it differs from the others' (a watcher running
    # Japanese and Chinese campaigns); "" = the campaigns' zone (watch.timezone, or found from the API).
    timezone: Annotated[str, pydantic.AfterValidator(check_timezone)] = ""
    # Labels notifiers route by (`matchers`), e.g. {team = "sales", customer = "acme"}; events carry them.
    labels: Annotated[dict[str, str], pydantic.BeforeValidator(check_labels)] = Field(default_factory=dict)


class WatchConfig(_Section):
    """`[watch]`: which tasks, how often, and the detection knobs."""

    @property
    def tz(self) -> zoneinfo.ZoneInfo | None:
        """The calling windows' time zone as configured; None: found from the API (watcher/zone.py)."""
        return zoneinfo.ZoneInfo(self.timezone) if self.timezone else None

    @property
    def ids(self) -> list[int]:
        """Every watched task: `tasks` then the `[[watch.task]]` entries."""
        return [*self.tasks, *(t.id for t in self.task)]

    @property
    def labels(self) -> dict[int, dict[str, str]]:
        """The tasks with labels."""
        return {t.id: t.labels for t in self.task if t.labels}

    @property
    def task_zones(self) -> dict[int, zoneinfo.ZoneInfo]:
        """The tasks with a zone of their own."""
        return {t.id: zoneinfo.ZoneInfo(t.timezone) for t in self.task if t.timezone}

    # (Declared before `tasks`, whose check reads it.)
    task: list[TaskConfig] = Field(default_factory=list)
    tasks: list[TaskId] = Field(default_factory=list, validate_default=True)
    interval: Annotated[Duration, Field(ge=0.1)] = 30.0
    progress_step: Annotated[int, Field(strict=True, ge=0, le=100)] = 10
    stall_after: Annotated[Duration, Field(gt=0)] = 900.0
    concurrency: Annotated[int, Field(strict=True, ge=1, le=MAX_CONCURRENCY)] = 8
    # Adaptive polling (see watcher/schedule.py): false polls every task every interval whatever its state.
    adaptive: Annotated[bool, Field(strict=True)] = True
    # The pace for tasks that cannot change soon: stop.*, pending before its start, running outside its windows.
    slow_interval: Annotated[Duration, Field(gt=0)] = 300.0
    # `done` is final: keep polling a finished task this long (slowly), then drop it from the schedule.
    done_linger: Duration = 3600.0
    # Time zone of the tasks' calling windows (option.startDate / option.startTime); "" = found from the API's
    # timestamps, and while it cannot be, windows slow nothing (watcher/zone.py).
    timezone: Annotated[str, pydantic.AfterValidator(check_timezone)] = ""

    @pydantic.field_validator("tasks")
    @classmethod
    def _some_and_unique(cls, tasks: list[int], info: pydantic.ValidationInfo) -> list[int]:
        entries = [t.id for t in info.data.get("task", [])]
        # None in the file is fine when tasks can be added at run time (`watcher tasks add`: [http] listen is set).
        at_run_time = bool((info.context or {}).get("tasks_at_run_time"))
        if not tasks and not entries and "task" in info.data and not at_run_time:
            raise ValueError(
                "needs at least one task: tasks = [1001, 1002] or a [[watch.task]] entry with an id"
                " (or set [http] listen and add them at run time with `watcher tasks add`)"
            )
        every = [*tasks, *entries]
        dupes = sorted({t for t in every if every.count(t) > 1})
        if dupes:
            raise ValueError(f"lists task {', '.join(map(str, dupes))} more than once (in tasks or [[watch.task]])")
        return tasks


def _none_if_empty(value: Any) -> Any:
    return None if value == "" else value


def _check_postgres_url(value: SecretStr | None) -> SecretStr | None:
    if value is not None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ValueError(
                "PostgreSQL needs the [postgres] extra: pip install 'voicefox-watcher[postgres]'"
            ) from None
        url = value.get_secret_value()
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or parts.query):
            raise ValueError('must be a PostgreSQL URL: "postgresql://user@host:5432/dbname" (or "" for SQLite)')
    return value


class StoreConfig(_Section):
    """`[store]`: where snapshots and the outbox live: a SQLite file (`path`, the default), or PostgreSQL (`url`)."""

    path: Path = Path("voicefox-watcher.db")
    # PostgreSQL instead of the SQLite file: "postgresql://user@host:5432/dbname?sslmode=verify-full". A password in
    # it is a credential (keep it in the environment, or url_file); better, `password`/`password_file`, or libpq's own
    # PGPASSWORD / ~/.pgpass.
    url: Annotated[
        SecretStr | None, pydantic.BeforeValidator(_none_if_empty), pydantic.AfterValidator(_check_postgres_url)
    ] = None
    password: Annotated[SecretStr | None, pydantic.BeforeValidator(_none_if_empty)] = None
    # TLS to PostgreSQL, as libpq names it ("" : the URL's or libpq's default): "verify-full" checks the server's
    # certificate and name against `sslrootcert`.
    sslmode: Annotated[
        Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None,
        pydantic.BeforeValidator(_none_if_empty),
    ] = None
    sslrootcert: Annotated[Path | None, pydantic.BeforeValidator(_none_if_empty)] = None
    # Replicas on PostgreSQL: how long a replica's hold on its tasks and receivers lasts without renewal (renewed every
    # third of it). A replica that dies loses its work to the others within this plus a third. Default: watch.interval,
    # at least 5 s.
    lease: Annotated[Annotated[Duration, Field(ge=1.0, le=3600.0)] | None, pydantic.BeforeValidator(_none_if_empty)] = (
        None
    )

    def lease_for(self, interval: float) -> float:
        """The lease time in force with this `watch.interval`."""
        return self.lease if self.lease is not None else max(interval, 5.0)

    @property
    def postgres(self) -> bool:
        """Whether the store is PostgreSQL."""
        return self.url is not None

    def conninfo(self) -> str:
        """The libpq connection string: the URL with the password and TLS settings given apart."""
        from psycopg.conninfo import make_conninfo

        assert self.url is not None
        extra: dict[str, str] = {}
        if self.password is not None:
            extra["password"] = self.password.get_secret_value()
        if self.sslmode is not None:
            extra["sslmode"] = self.sslmode
        if self.sslrootcert is not None:
            extra["sslrootcert"] = str(self.sslrootcert)
        return str(make_conninfo(self.url.get_secret_value(), **extra))

    def shown(self) -> str:
        """Where the store is, as messages may say it (a URL without its password)."""
        if self.url is None:
            return str(self.path)
        parts = urlsplit(self.url.get_secret_value())
        host = parts.hostname or ""
        user = f"{parts.username}@" if parts.username else ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class DeliveryConfig(_Section):
    """`[delivery]`: how hard to try each receiver."""

    timeout: Annotated[Duration, Field(gt=0)] = 10.0
    max_age: Annotated[Duration, Field(gt=0)] = 86400.0
    backoff_max: Annotated[Duration, Field(gt=0)] = 300.0
    shutdown_grace: Duration = 10.0
    verify_tls: Annotated[bool, Field(strict=True)] = True
    # A notifier that fails this long (or gives an event up) is announced to the others (receiver_failing).
    failing_after: Annotated[Duration, Field(gt=0)] = 900.0


def parse_listen(value: str) -> tuple[str, int] | None:
    """ "host:port", "[v6]:port" or ":port" (all interfaces) -> (host, port); "" -> None (off)."""
    if not value:
        return None
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:  # 0: any free port
        raise ValueError(f'{json.dumps(value)} is not host:port (e.g. "127.0.0.1:9310", ":9310", "[::1]:9310")')
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"  # noqa: S104 - ":port" asks for every interface
    return host, int(port_text)


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


def _check_ui(value: bool) -> bool:
    if value:
        try:
            import jinja2  # noqa: F401 - only whether it is there, so that `watcher check` says so before `run`
        except ImportError:
            raise ValueError("the status page needs the [ui] extra: pip install 'voicefox-watcher[ui]'") from None
    return value


class HttpConfig(_Section):
    """`[http]`: the operator endpoint (/healthz, /readyz, /metrics); off when `listen` is empty."""

    listen: Annotated[str, pydantic.AfterValidator(_check_listen)] = ""
    # The status page at `/` (read-only): off unless true.
    ui: Annotated[bool, Field(strict=True), pydantic.AfterValidator(_check_ui)] = False
    # The operator's token: "Authorization: Bearer <token>" (or HTTP Basic with it as the password, for a browser)
    # opens the status page and `watcher tasks add/remove`. Required for them when `listen` is beyond loopback.
    token: Annotated[SecretStr, pydantic.AfterValidator(check_token)] | None = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when off."""
        return parse_listen(self.listen)

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the endpoint."""
        address = self.address
        return address is not None and is_loopback(address[0])

    @pydantic.model_validator(mode="after")
    def _token_beyond_loopback(self) -> HttpConfig:
        if self.ui and self.address is not None and not self.loopback and self.token is None:
            raise ValueError(
                "token: needed when ui = true and listen is beyond loopback (anyone who can reach the port would see"
                " every campaign): set token (or token_file), or listen on 127.0.0.1"
            )
        return self


class PushConfig(_Section):
    """`[push]`: VoiceFox's own task.end webhook as a hint to poll now, served on `[http] listen`."""

    path: Annotated[str, Field(pattern=r"^(/[A-Za-z0-9._~/-]*)?$")] = ""  # off when empty
    secret: SecretStr | None = None  # the shared secret set in the VoiceFox console
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] = "X-Webhook-Secret"
    # A push for a task not watched adds it (as `watcher tasks add` would); false: such a push is ignored.
    adopt: Annotated[bool, Field(strict=True)] = False

    @pydantic.model_validator(mode="after")
    def _secret_when_on(self) -> PushConfig:
        if self.path and (self.secret is None or len(self.secret.get_secret_value()) < 16):
            raise ValueError("secret: needed, at least 16 characters, when path is set (the secret set in VoiceFox)")
        return self


class HealthConfig(_Section):
    """`[health]`: campaign health from VoiceFox's call log (watcher/health.py): is a running task calling, and has
    the share of answered calls collapsed."""

    # Read the call log at all (counts and times only: never a phone number). false: stalls rest on progress alone.
    calllog: Annotated[bool, Field(strict=True)] = True
    # How often the call log is read for the running tasks inside their windows (10 tasks per request); at least
    # twice per `[watch] stall_after` whatever this says.
    every: Annotated[Duration, Field(ge=1)] = 120.0
    # A drop is an answered share below both `answer_rate_floor` and the task's own earlier share cut by this fraction.
    answer_rate_drop: Annotated[float, Field(gt=0, lt=1)] = 0.5
    answer_rate_floor: Annotated[float, Field(gt=0, le=1)] = 0.10
    # The recent calls the answered share is taken over, and how many the window and the task's earlier calls each
    # hold before anything is judged.
    window: Annotated[int, Field(strict=True, ge=1, le=10_000)] = 100
    min_calls: Annotated[int, Field(strict=True, ge=1, le=10_000)] = 50

    @pydantic.model_validator(mode="after")
    def _min_calls_fit(self) -> HealthConfig:
        if self.min_calls > self.window:
            raise ValueError(f"min_calls ({self.min_calls}) is at most window ({self.window}): the window holds them")
        return self


def _check_rule(when: str) -> str:
    from .rules import compile_rule

    compile_rule(when)  # a RuleError is a ValueError: pydantic reports it at rules[i].when, named by _loc
    return when


class RuleConfig(_Section):
    """A `[[rules]]` entry: a condition on a task's values (CEL) that raises `rule_matched` while it holds."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
    # e.g. "progress >= 30 && collectionRate < 20"; the variables: watcher/rules.py VARIABLES (README).
    when: Annotated[str, Field(max_length=4000), pydantic.AfterValidator(_check_rule)]
    description: Annotated[str, Field(max_length=2000)] = ""


class LogConfig(_Section):
    """`[log]`: level and rendering."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class MessagesConfig(_Section):
    """`[messages]`: how alerts read, for every notifier (a notifier's own `language` wins)."""

    # The language people read: "en", "ja", "zh-Hans" or "zh-Hant".
    language: Language = DEFAULT_LANGUAGE
    # A link to the task in every chat message and email: "{id}" is replaced by the task id. "" = none.
    task_url: Annotated[str, pydantic.AfterValidator(check_task_url)] = ""


if TYPE_CHECKING:
    NotifierConfig = NotifierBase  # for the type checker: what every kind has (its own keys are read by its module)
else:
    # The notifier kinds, as the registry in watcher/notify declares them: one source of truth.
    NotifierConfig = Annotated[Union[tuple(kind.config for kind in KINDS.values())], Field(discriminator="kind")]  # noqa: UP007 - a Union built at run time
NOTIFIER_KINDS = tuple(KINDS)


def _check_unique(names: list[str], what: str) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{what} name {', '.join(map(repr, dupes))} is used more than once; names must be unique")


class Config(_Section):
    """The whole validated configuration."""

    api: ApiConfig
    watch: WatchConfig
    store: StoreConfig = StoreConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    log: LogConfig = LogConfig()
    http: HttpConfig = HttpConfig()
    push: PushConfig = PushConfig()
    health: HealthConfig = HealthConfig()
    messages: MessagesConfig = MessagesConfig()
    notifiers: list[NotifierConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)

    @pydantic.field_validator("rules")
    @classmethod
    def _unique_rule_names(cls, rules: list[RuleConfig]) -> list[RuleConfig]:
        _check_unique([r.name for r in rules], "rule")
        return rules

    @pydantic.model_validator(mode="after")
    def _tasks_can_come(self) -> Config:
        # No task in the file is fine only if some can be added at run time: `watcher tasks add` is served on a
        # loopback listener, or with [http] token; or VoiceFox's pushes adopt them.
        http = self.http
        if not self.watch.ids and not (http.loopback or http.token is not None or self.push.adopt):
            raise ValueError(
                "watch.tasks: no task, and none can be added at run time: [http] listen is not on 127.0.0.1 and has"
                " no [http] token, so `watcher tasks add` would be refused; set [http] token, or list tasks"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _push_needs_http(self) -> Config:
        if self.push.path and not self.http.listen:
            raise ValueError("push.path: the push endpoint is served on [http] listen, which is not set")
        return self

    @pydantic.model_validator(mode="after")
    def _quiet_hours_have_a_zone(self) -> Config:
        for i, n in enumerate(self.notifiers):
            if not n.quiet:
                continue
            zone = n.quiet_timezone or self.watch.timezone
            if not zone:
                raise ValueError(
                    f"notifiers[{i}] ({n.name}).quiet: quiet hours need a time zone: set quiet_timezone on the notifier"
                    ' or [watch] timezone (e.g. "Asia/Tokyo"); the host\'s zone is never assumed'
                )
            QuietHours.parse(n.quiet, zone, key=f"notifiers[{i}] ({n.name}).quiet")
        return self

    def quiet_hours(self, notifier: NotifierBase) -> QuietHours | None:
        """A notifier's quiet hours, or None if it has none."""
        if not notifier.quiet:
            return None
        return QuietHours.parse(notifier.quiet, notifier.quiet_timezone or self.watch.timezone)

    @pydantic.field_validator("notifiers")
    @classmethod
    def _unique_names(cls, notifiers: list[Any]) -> list[Any]:
        _check_unique([n.name for n in notifiers], "notifier")
        return notifiers


def _expand(node: Any, path: str, env: dict[str, str], problems: list[str]) -> Any:
    """Replace ${VAR} in every string value; record a problem per unset variable."""
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                problems.append(f"{path}: environment variable {name} is not set")
                return ""
            return env[name]

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else k, env, problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    return node


# Every place a config holds a secret, as (section, key, notifier kind or None for any). Value redaction in the logs
# (`secret_values`), the warning about a readable config (`literal_secrets_exposed`) and the `*_file` keys all read
# this one table; a test checks it against every SecretStr field of the models above.
SECRETS: tuple[tuple[str, str, str | None], ...] = (
    ("api", "token", None),
    ("push", "secret", None),
    ("http", "token", None),
    ("store", "url", None),  # a PostgreSQL URL may carry its password
    ("store", "password", None),
    ("notifiers", "secret", None),
    # Each kind's own credentials, as its registry entry declares them (a Slack URL's path is one).
    *(("notifiers", key, name) for name, kind in KINDS.items() for key in kind.secrets),
)

# `token_file`, `secret_file`, `url_file`: the value is read from a file (systemd credentials, Docker secrets). A
# webhook's url may carry a token in its query, so url_file is taken for every kind.
_FILE_KEYS = tuple(dict.fromkeys(key for _, key, _ in SECRETS))


def secret_values(config: Config) -> list[str]:
    """Every secret a loaded config holds, for the log redaction to hide wherever it appears."""
    values = []
    for section, key, kind in SECRETS:
        nodes: list[Any] = (
            [n for n in config.notifiers if kind is None or n.kind == kind]
            if section == "notifiers"
            else [getattr(config, section)]
        )
        for node in nodes:
            value = getattr(node, key, None)
            if isinstance(value, SecretStr):
                values.append(value.get_secret_value())
    return values


def _read_secret_files(node: Any, path: str, base_dir: Path | None, problems: list[str]) -> Any:
    if isinstance(node, list):
        return [_read_secret_files(v, f"{path}[{i}]", base_dir, problems) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {k: _read_secret_files(v, f"{path}.{k}" if path else k, base_dir, problems) for k, v in node.items()}
    for key in _FILE_KEYS:
        file_key = f"{key}_file"
        if file_key not in out:
            continue
        where = f"{path}.{file_key}" if path else file_key
        name = out.pop(file_key)
        if key in out:
            problems.append(f"{where}: give {key} or {file_key}, not both")
            continue
        if not isinstance(name, str) or not name:
            problems.append(f"{where}: must be a file path")
            continue
        file = Path(name)
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        try:
            value = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{where}: cannot read {file}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if not value:
            problems.append(f"{where}: {file} is empty")
            continue
        out[key] = value
    return out


_TABLE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """Line number of each `table.key` (and of each table header) in a TOML text, for error messages."""
    lines: dict[str, int] = {}
    table = ""
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _TABLE.match(line):
            name = m.group(2)
            if m.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                table = f"{name}[{counts[name]}]"
            else:
                table = name
            lines.setdefault(table, number)
        elif m := _KEY.match(line):
            lines.setdefault(f"{table}.{m.group(1)}" if table else m.group(1), number)
    return lines


def _with_line(problem: str, lines: dict[str, int]) -> str:
    key = re.sub(r"^(\S+\[\d+\]) \([^)]*\)", r"\1", problem).split(":", 1)[0]  # rules[0] (its name).when
    while key:
        if key in lines:
            return f"{problem} (line {lines[key]})"
        key = key.rpartition(".")[0] if "." in key else key.rpartition("[")[0]
    return problem


_MESSAGES = {
    "extra_forbidden": "unknown key (a typo? see config.example.toml for the valid keys)",
    "missing": "is required",
}


def _loc(loc: tuple[int | str, ...], raw: dict[str, Any] | None = None) -> str:
    out = ""
    parts = list(loc)
    # A discriminated union puts the tag in the path (notifiers.0.webhook.url): drop it.
    if len(parts) >= 3 and parts[0] == "notifiers" and parts[2] in NOTIFIER_KINDS:
        del parts[2]
    for i, p in enumerate(parts):
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
        if i == 1 and parts[0] == "rules" and isinstance(p, int):
            out += _rule_name(raw, p)  # rules[0] (low collection).when: people know a rule by its name
    return out


def _rule_name(raw: dict[str, Any] | None, index: int) -> str:
    rules = raw.get("rules") if raw is not None else None
    entry = rules[index] if isinstance(rules, list) and index < len(rules) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    return f" ({name})" if isinstance(name, str) and name.strip() else ""


def _describe(err: Any) -> str:
    kind = err["type"]
    if kind == "union_tag_invalid":
        return f"{err['ctx']['tag']!r} is not a notifier kind (use one of: {', '.join(NOTIFIER_KINDS)})"
    if kind == "union_tag_not_found":
        return f"kind is required (one of: {', '.join(NOTIFIER_KINDS)})"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")


def validate(
    raw: dict[str, Any], *, source: str, env: dict[str, str] | None = None, base_dir: Path | None = None
) -> Config:
    """Expand variables in a parsed TOML document and validate it; raise ConfigError listing every problem."""
    problems: list[str] = []
    environ = dict(os.environ) if env is None else env
    expanded = _expand(raw, "", environ, problems)
    store = expanded.get("store")
    if environ.get("STATE_DIRECTORY") and not (isinstance(store, dict) and "path" in store):
        # systemd's StateDirectory= (and the container image) say where state belongs when the config does not.
        state_dir = environ["STATE_DIRECTORY"].split(":")[0]
        expanded["store"] = {**(store if isinstance(store, dict) else {}), "path": f"{state_dir}/state.db"}
    expanded = _read_secret_files(expanded, "", base_dir, problems)
    try:
        http = expanded.get("http")
        listen = isinstance(http, dict) and bool(http.get("listen"))
        config = Config.model_validate(expanded, context={"tasks_at_run_time": listen})
    except pydantic.ValidationError as exc:
        unset = {p.split(":", 1)[0] for p in problems}  # a key whose ${VAR} is unset: that is the whole story
        for err in exc.errors():
            loc = _loc(err["loc"], expanded) + (".kind" if err["type"].startswith("union_tag") else "")
            line = f"{loc}: {_describe(err)}" if loc else _describe(err)
            if line not in problems and loc not in unset:
                problems.append(line)
        raise ConfigError(problems, source) from None
    if base_dir is not None and not config.store.path.is_absolute():
        # A relative store path is relative to the config file, not to wherever the daemon was started from.
        config = config.model_copy(
            update={"store": config.store.model_copy(update={"path": base_dir / config.store.path})}
        )
    if not config.store.postgres and (store_path := config.store.path).is_dir():  # else `run` alone refuses it
        problems.append(
            f"store.path: {store_path} is a directory; give a file inside it, e.g. {store_path / 'state.db'}"
        )
    if problems:
        raise ConfigError(problems, source)
    return config


def load(path: Path, *, env: dict[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; raise ConfigError (never anything else) on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"no such file (pass -c FILE or set ${CONFIG_ENV})"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [f"cannot read it: {exc.__class__.__name__}: {getattr(exc, 'strerror', None) or exc}"], str(path)
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax error: {exc}"], str(path)) from None
    try:
        return validate(raw, source=str(path), env=env, base_dir=path.resolve().parent)
    except ConfigError as exc:
        lines = key_lines(text)
        raise ConfigError([_with_line(p, lines) for p in exc.problems], str(path)) from None


def literal_secrets_exposed(path: Path) -> list[str]:
    """Keys holding a literal secret (not ${VAR}, not *_file) in a config file that others may read."""
    try:
        if not path.stat().st_mode & 0o044:  # neither group nor others may read it
            return []
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []

    def literal(value: Any) -> bool:
        return isinstance(value, str) and bool(value) and not _VAR.search(value)

    keys = []
    for section, key, kind in SECRETS:
        node = raw.get(section)
        if section == "notifiers":
            for i, n in enumerate(node if isinstance(node, list) else []):
                if isinstance(n, dict) and (kind is None or n.get("kind") == kind) and literal(n.get(key)):
                    keys.append(f"notifiers[{i}].{key}")
        elif isinstance(node, dict) and literal(node.get(key)):
            if (section, key) == ("store", "url") and not _url_password(str(node[key])):
                continue  # a database URL without a password is an address, not a secret
            keys.append(f"{section}.{key}")
    return keys


def _url_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return True  # unreadable: better warned about


def default_path(explicit: str | None) -> Path:
    """-c FILE, else $WATCHER_CONFIG, else ./watcher.toml."""
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)
