"""Fitting a message into a platform's size limit, counted as the platform counts it: bytes of the request body."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .message import Message

ELLIPSIS = "…"
_HEADLINE_KEPT = 200  # bytes of a headline always kept: what happened to which campaign stays readable


def cut_bytes(text: str, limit: int) -> str:
    """`text` in at most `limit` bytes of UTF-8, cut at a character boundary and ended with "…" when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    room = max(0, limit - len(ELLIPSIS.encode()))
    return raw[:room].decode(errors="ignore") + ELLIPSIS


def most_that_fit(count: int, fits: Callable[[int], bool]) -> int:
    """The largest `kept` in 0..count for which `fits(kept)` holds, 0 when none does: how many items of a digest a
    platform takes (`fits` renders the first `kept` items and the "… and N more" line; fewer never makes more)."""
    if fits(count):
        return count
    low, high = 0, count - 1
    while low < high:  # a binary search: a 50-item digest is rendered about six times, not fifty
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def fit(message: Message, render: Callable[[Message], bytes], limit: int) -> bytes:
    """The body `render` makes of `message`, with its longest texts cut until the body is at most `limit` bytes.

    The details (summary, suggestion: free text from the API, the only parts without a bound) are cut first, longest
    first; the headline (it carries the campaign's name) only when they are spent. Every cut takes at least the
    excess off the text itself, and escaping in the body only ever adds bytes, so each round gets closer.
    """
    body = render(message)
    while len(body) > limit:
        excess = len(body) - limit
        sizes = [len(d.value.encode()) for d in message.details]
        longest = max(range(len(sizes)), key=sizes.__getitem__, default=None)
        if longest is not None and sizes[longest] > len(ELLIPSIS.encode()):
            detail = message.details[longest]
            cut = dataclasses.replace(detail, value=cut_bytes(detail.value, sizes[longest] - excess))
            details = (*message.details[:longest], cut, *message.details[longest + 1 :])
            message = dataclasses.replace(message, details=details)
        elif len(message.headline.encode()) > _HEADLINE_KEPT:
            headline = cut_bytes(message.headline, max(_HEADLINE_KEPT, len(message.headline.encode()) - excess))
            message = dataclasses.replace(message, headline=headline)
        else:
            break  # nothing long left to cut: the platform will say what it thinks of the rest
        body = render(message)
    return body
