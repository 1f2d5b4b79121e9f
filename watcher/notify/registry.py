"""Every notifier kind, by the name `kind = "..."` gives it: adding a channel is a module and one line here."""

from __future__ import annotations

from . import apprise, email, log, slack, webhook
from .base import Kind

KINDS: dict[str, Kind] = {
    "webhook": webhook.KIND,
    "slack": slack.KIND,
    "log": log.KIND,
    "email": email.KIND,
    "apprise": apprise.KIND,
}
