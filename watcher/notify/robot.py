"""What the Chinese group robots (DingTalk, WeCom) share: their markdown, sized by UTF-8 bytes, and their answer.

Both take a small, loosely specified markdown and document no way to escape it. So text from a `Message` (which is
plain text, and may hold a campaign name such as `*VIP* [x](y) <@all> #1`) has every character that markdown or
the HTML both clients render (`<font>`) could read as structure written as an HTML character reference (`*` as
`&#42;`): markdown parsers never read a reference as formatting (CommonMark, "Entity and numeric character
references"), and an HTML renderer shows it as the character. Both answer HTTP 200 with
`{"errcode": 0, "errmsg": "ok"}`, a non-zero `errcode` being the failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import quote

import httpx

from ..errors import DeliveryError
from .message import Digest, Fact, Message

# Each event type's symbol (the icon names of `Message`), as Unicode emoji: neither platform has Slack's shortcodes.
EMOJI = {
    "observed": "👀",
    "started": "▶️",
    "progressed": "📊",
    "finished": "✅",
    "stopped": "⏸️",
    "timed_out": "⌛",
    "failed": "❌",
    "resumed": "▶️",
    "changed": "❔",
    "stalled": "⚠️",
    "missing": "👻",
    "unstalled": "📈",
    "reappeared": "🔎",
    "rule_matched": "🚩",
    "rule_resolved": "☑️",
    "answer_rate_dropped": "📉",
    "answer_rate_recovered": "📞",
    "api_unreachable": "📡",
    "api_recovered": "📡",
    "receiver_failing": "📭",
    "receiver_recovered": "📬",
    "test": "🔔",
}

# Anywhere in a line: emphasis (* _ ~), code (`), links and images ([ ]), HTML and WeCom's <@userid> (< > &),
# headings and their closing #s (#), tables (|), and the backslash that would escape what follows it.
_REFERENCES = {ord(c): f"&#{ord(c)};" for c in "\\`*_~[]<>#&|"}
# At the start of a line: a list item (- + or "1." "1)"), or a heading underline (= -).
_LINE_START = re.compile(r"^(?:[-+=]|\d+[.)])")
_BLOCKS = "\n\n"  # a blank line ends a paragraph, a list or a quote on both platforms
CUT = "…"
_MAX_LINE = 400  # bytes of markdown for one digest item's headline: a name of 500 characters must not fill a message


def unsafe(text: str) -> str:
    """The characters of `text` that `escape` would rewrite (for settings that must appear in a message as written)."""
    return "".join(sorted({c for c in text if ord(c) in _REFERENCES}))


def escape_lines(text: str) -> list[str]:
    """`text` as lines of markdown that show it as written: never formatting, a link, a heading, HTML or a mention."""
    lines = []
    for raw in text.splitlines() or [""]:
        # Leading spaces would make an indented code block (and trailing ones a hard break): neither is text.
        line = raw.strip().translate(_REFERENCES)
        if m := _LINE_START.match(line):
            end = m.end() - 1
            line = f"{line[:end]}&#{ord(line[end])};{line[end + 1 :]}"
        lines.append(line)
    return lines


def escape(text: str) -> str:
    """`text` on one line of markdown, shown as written (line breaks become spaces)."""
    return " ".join(line for line in escape_lines(text) if line)


def size(text: str) -> int:
    """How both platforms measure a message: UTF-8 bytes."""
    return len(text.encode())


def fit(text: str, limit: int, *, join: str = "\n") -> str:
    """`text` escaped (its lines joined with `join`) in at most `limit` UTF-8 bytes, cut with "…" if need be.

    Cut in the plain text, then escaped, so a cut never splits a character or a character reference."""

    def render(plain: str) -> str:
        return join.join(line for line in escape_lines(plain) if line)

    whole = render(text)
    if size(whole) <= limit:
        return whole
    low, high = 0, len(text)  # the longest prefix whose rendering, with the mark, fits: a binary search
    while low < high:
        middle = (low + high + 1) // 2
        if size(render(text[:middle].rstrip()) + CUT) <= limit:
            low = middle
        else:
            high = middle - 1
    cut = render(text[:low].rstrip()) + CUT
    return cut if size(cut) <= limit else ""


def link_target(url: str) -> str:
    """A URL safe inside markdown's `[text](url)`: parentheses, spaces and angle brackets percent-encoded."""
    return quote(url, safe="/:?#[]@!$&'*+,;=%~")


def assemble(
    head: list[str],
    details: tuple[Fact, ...],
    tail: list[str],
    *,
    limit: int,
    detail: Callable[[str, str], str],
    value_join: str,
) -> str:
    """Blocks of markdown, blank lines between them, in at most `limit` UTF-8 bytes: `head`, then each detail as
    `detail(escaped label, escaped value)` with the values cut to share what `head` and `tail` leave (what one
    detail does not need goes to the next), then `tail`."""
    budget = limit - size(_BLOCKS.join(head + tail)) - len(_BLOCKS) * len(details)
    blocks = []
    for i, fact in enumerate(details):
        label = escape(fact.label)
        share = budget // (len(details) - i)
        block = detail(label, fit(fact.value, share - size(detail(label, "")), join=value_join))
        budget -= size(block)
        blocks.append(block)
    text = _BLOCKS.join(head + blocks + tail)
    if size(text) <= limit:
        return text
    # Only a head and tail too long by themselves (each of their parts is capped) get here: whole lines go from the
    # end, as every line of ours is complete markdown on its own (no emphasis or tag spans two lines).
    kept: list[str] = []
    for line in text.split("\n"):
        if size("\n".join([*kept, line])) > limit:
            break
        kept.append(line)
    return "\n".join(kept)


def errcode(response: httpx.Response, shown: str, platform: str) -> tuple[int, str]:
    """The `errcode` and `errmsg` of a 2xx answer; a body without them is refused for good (it is not the robot)."""
    try:
        body = json.loads(response.content)
        code = body["errcode"]
        message = body.get("errmsg", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DeliveryError(
            f"{shown}: answered {response.status_code} without {platform}'s errcode: is url the robot's webhook URL?",
            permanent=True,
        ) from None
    if not isinstance(code, int) or isinstance(code, bool):
        raise DeliveryError(f"{shown}: answered an errcode that is not a number", permanent=True)
    return code, message if isinstance(message, str) else ""


def shown_errmsg(message: str, hidden: list[str]) -> str:
    """`errmsg` as an error message may quote it: one line, 200 characters, nothing of `hidden` (credentials)."""
    text = " ".join(message.split())
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***")
    return text[:200]  # cut after the credentials are gone, so that no part of one is left at the end


def message_symbol(msg: Message) -> str:
    """The emoji of a message's event type."""
    return EMOJI.get(msg.icon, "ℹ️")


def digest_symbol(digest: Digest) -> str:
    """The emoji of a digest: its first most severe item's, so that a failure shows whatever else came with it."""
    return next((message_symbol(item) for item in digest.items if item.severity is digest.severity), "ℹ️")


def digest_lines(digest: Digest, kept: int, *, bullet: str) -> list[str]:
    """A line of markdown for each of the first `kept` items (emoji, headline, link), and the "… and N more" line
    for the rest; `bullet` starts each ("- " makes a list)."""
    lines = []
    for item in digest.items[:kept]:
        line = f"{bullet}{message_symbol(item)} {fit(item.headline, _MAX_LINE, join=' ')}"
        if item.link:
            line += f" [{escape(item.link_text)}]({link_target(item.link)})"
        lines.append(line)
    if kept < len(digest.items):
        lines.append(f"{bullet}{escape(digest.more(len(digest.items) - kept))}")
    return lines
