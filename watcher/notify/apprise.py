"""Apprise channel: the long tail of services (LINE, Telegram, Discord, ntfy, PagerDuty, Opsgenie, Pushover, SMS
gateways...) through one Apprise URL per notifier. Needs the extra: `pip install 'voicefox-watcher[apprise]'`.

Apprise is synchronous and says little: a service delivered or it did not (with a log line), never a status code or a
Retry-After. So every failure is temporary, retried with backoff until `[delivery] max_age`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import anyio.to_thread
import pydantic
from pydantic import SecretStr

from ..errors import DeliveryError
from ..fields import NotifierBase
from ..i18n import DEFAULT_LANGUAGE
from ..model import Event
from .base import FOR_PEOPLE, Context, EventFilter, Kind, digest_of
from .message import Digest, Message, Severity, build, build_digest

if TYPE_CHECKING:
    import apprise

INSTALL = "pip install 'voicefox-watcher[apprise]'"
_MAX_DETAIL = 2_000  # characters of one summary or suggestion: a chat or SMS message, not a report


def load(url: str, name: str) -> apprise.Apprise:
    """An `Apprise` holding exactly the one service `url` names; ValueError (never naming the URL) otherwise."""
    try:
        import apprise
    except ImportError:
        raise ValueError(f"notifier {name!r} needs Apprise, which is not installed: {INSTALL}") from None
    services = apprise.Apprise()
    if not services.add(url):
        # The URL holds credentials: say what is wrong without it.
        raise ValueError(
            f"notifier {name!r}: Apprise does not know this URL or finds it incomplete (check its scheme and "
            "parts against the service's page in the Apprise wiki; the URL is not shown: it holds credentials)"
        )
    if len(services) != 1:
        raise ValueError(
            f"notifier {name!r}: the url holds {len(services)} Apprise URLs; give each its own [[notifiers]] entry "
            "(each is then its own receiver, with its own retries and dead letters)"
        )
    return services


class AppriseNotifierConfig(NotifierBase):
    """A `[[notifiers]]` entry of kind "apprise": one Apprise URL (a credential)."""

    kind: Literal["apprise"]
    url: SecretStr

    @pydantic.model_validator(mode="after")
    def _apprise_knows_it(self) -> AppriseNotifierConfig:
        load(self.url.get_secret_value(), self.name)
        return self


def _defuse(text: str) -> str:
    # Text goes to services that turn "@all", "@channel" or "@everyone" into a mention of everyone (Mattermost,
    # Discord...): a zero-width space after each "@" keeps a campaign name from ever doing that, and reads the same.
    return text.replace("@", "@\u200b")


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def render(msg: Message) -> tuple[str, str]:
    """(title, body) in plain text: Apprise escapes plain text for each service that reads markdown or HTML, where
    markdown would reach an SMS or a text-only service with its asterisks."""
    paragraphs = []
    if msg.facts:
        paragraphs.append("\n".join(f"{fact.label}: {fact.value}" for fact in msg.facts))
    # (a template's body comes as one detail without a label)
    paragraphs += [f"{d.label}:\n{_cut(d.value)}" if d.label else _cut(d.value) for d in msg.details]
    if msg.link:
        paragraphs.append(f"{msg.link_text}: {msg.link}")
    paragraphs.append(msg.footer)
    return _defuse(msg.headline), _defuse("\n\n".join(paragraphs))


def render_digest(digest: Digest) -> tuple[str, str]:
    """(title, body) of a digest in plain text: the headline as the title, a line per event and its link below it.
    Every event is listed: Apprise fits the body to each service itself (it cuts or splits what is too long)."""
    lines = []
    for item in digest.items:
        lines.append(f"- {item.headline}")
        if item.link:
            lines.append(f"  {item.link}")
    return _defuse(digest.headline), _defuse("\n".join(lines) + f"\n\n{digest.footer}")


# Apprise's four notification types: services show them as a colour, an icon or a priority.
NOTIFY_TYPES: dict[Severity, Literal["info", "success", "warning", "failure"]] = {
    Severity.INFO: "info",
    Severity.GOOD: "success",
    Severity.WARNING: "warning",
    Severity.DANGER: "failure",
}


def _secret_parts(url: str) -> list[str]:
    """The pieces of an Apprise URL that may be credentials (a token is often its host or a path segment)."""
    parts = urlsplit(url)
    pieces = [url, parts.netloc, parts.username, parts.password, parts.hostname, parts.fragment]
    pieces += parts.path.split("/") + [value for _, value in parse_qsl(parts.query)]
    pieces += [unquote(p) for p in pieces if p]  # Apprise logs a token as it decoded it (a LINE token holds "/", "+")
    # Longest first, so a token is replaced whole before a piece of it; short pieces would blank innocent words.
    return sorted({p for p in pieces if p and len(p) >= 4}, key=len, reverse=True)


class AppriseNotifier:
    """Sends each event through one Apprise URL, off the event loop."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        events: list[str] | None = None,
        language: str = DEFAULT_LANGUAGE,
        task_url: str = "",
        messages: Callable[[Event], Message] | None = None,
        timeout: float = 10.0,
        digest: bool = True,
    ) -> None:
        self.name = name
        self.digest = digest
        self._language = language
        self._services = load(url, name)
        self._message = messages or (lambda event: build(event, language=language, task_url=task_url))
        self._timeout = timeout
        self._secrets = _secret_parts(url)
        self.service = self._services[0].service_name
        self._shown = f"{name} (Apprise: {self.service})"
        self.wants = EventFilter(events if events is not None else FOR_PEOPLE)

    @classmethod
    def from_config(cls, config: AppriseNotifierConfig, context: Context) -> AppriseNotifier:
        """Build from a `[[notifiers]]` entry."""
        return cls(
            config.name,
            config.url.get_secret_value(),
            events=config.events,
            language=context.language_of(config),
            messages=context.messages_for(config),
            timeout=context.timeout,
            digest=digest_of(config),
        )

    async def send(self, event: Event) -> None:
        """Notify the service or raise DeliveryError (always temporary: Apprise cannot say more)."""
        msg = self._message(event)
        await self._notify(*render(msg), msg.severity)

    async def send_digest(self, events: Sequence[Event]) -> None:
        """One notification listing the events, or DeliveryError as `send` raises it."""
        digest = build_digest(events, language=self._language, messages=self._message)
        await self._notify(*render_digest(digest), digest.severity)

    async def _notify(self, title: str, body: str, severity: Severity) -> None:
        notify = functools.partial(
            self._services.notify,
            body=body,
            title=title,
            notify_type=NOTIFY_TYPES[severity],
            body_format="text",
            timeout=self._timeout,  # Apprise stops waiting then, and reports TIMEOUT
        )
        try:
            # Apprise blocks (requests, smtplib): a worker thread, abandoned if the dispatcher's deadline passes first.
            result = await anyio.to_thread.run_sync(notify, abandon_on_cancel=True)
        except Exception as exc:  # noqa: BLE001 - a crash in a plugin is one failed attempt, not a dead daemon
            raise DeliveryError(f"{self._shown}: Apprise failed ({exc.__class__.__name__})") from None
        if result:
            return
        if result.timeout_count:
            raise DeliveryError(f"{self._shown}: no answer in {self._timeout:g}s")
        raise DeliveryError(f"{self._shown}: not delivered ({self._reason(result)})")

    def _reason(self, result: apprise.AppriseResult) -> str:
        """Apprise's last warning about it, with every piece of the URL blanked; or that it gave none."""
        said = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR", "CRITICAL")]
        if not said:
            return "Apprise gives no reason"
        reason = " ".join(said[-1].split())
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        return reason[:300]


KIND = Kind(
    config=AppriseNotifierConfig, default_events=FOR_PEOPLE, build=AppriseNotifier.from_config, secrets=("url",)
)
