"""Every notifier kind, by the name `kind = "..."` gives it: adding a channel is a module and one line here."""

from __future__ import annotations

from . import apprise, dingtalk, email, feishu, log, slack, teams, webhook, wecom
from .base import Kind

KINDS: dict[str, Kind] = {
    "webhook": webhook.KIND,
    "slack": slack.KIND,
    "dingtalk": dingtalk.KIND,
    "wecom": wecom.KIND,
    "feishu": feishu.KIND,
    "teams": teams.KIND,
    "email": email.KIND,
    "apprise": apprise.KIND,
    "log": log.KIND,
}
