"""The status page's HTTP side (`[http] ui = true`), behind the operator endpoint's authorisation: `/` the page,
`/ui/live` its live part (htmx swaps it in every few seconds), `/ui/status.json` the same as data, `/ui/static/...`
its stylesheet, script and the vendored htmx. Read-only: GET and HEAD only.

Jinja2 renders it with autoescaping on, so a campaign named `<script>` shows as written. htmx is served from the
package, never a CDN: many watchers run where the internet is out of reach.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .. import __version__
from ..config import Config
from ..daemon import Daemon, utcnow
from ..errors import StoreError
from ..httpserver import Request, Response
from ..ops import READY_INTERVALS
from ..stores import StateStore
from .board import RECENT_EVENTS, ApiHealth, Board, Facts, Paces, Scrubber, board

HTMX_VERSION = "2.0.11"  # watcher/ui/static/htmx.min.js, from npm's htmx.org (licence beside it)
# The page asks for fresh content at the pace of polling, within these bounds: nothing it shows changes faster than
# a poll (a delivery's outcome does, and waits at most the upper bound).
REFRESH_MIN, REFRESH_MAX = 1.0, 5.0

_STATIC = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
    "status.css": "text/css; charset=utf-8",
    "htmx.LICENSE": "text/plain; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# Only our own files, no inline script or style, no framing, no form posts: a name from the API that slipped past
# the escaping still could not run.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_DYNAMIC = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
)


class StatusPage:
    """Answers the status page's paths; seams: `clock` (wall, aware) and `monotonic` (the daemon's)."""

    def __init__(
        self,
        daemon: Daemon,
        store: StateStore,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        import jinja2  # the [ui] extra; the config refuses `ui = true` without it

        self._daemon = daemon
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._paces = Paces()
        self._scrub: Scrubber | None = None  # (see _scrubber)
        self._scrub_for: Config | None = None
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("watcher.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        files = importlib.resources.files("watcher.ui") / "static"
        self._static = {name: (files / name).read_bytes() for name in _STATIC}

    async def __call__(self, request: Request) -> Response:
        """Answer one request for `/` or `/ui/...`."""
        if request.method not in ("GET", "HEAD"):
            return Response(405, b'{"status":"error","reason":"the status page is read-only: use GET"}')
        path = request.path
        if path.startswith("/ui/static/") and (name := path.removeprefix("/ui/static/")) in _STATIC:
            # Versioned URLs (?v=) change with each release, so a browser may keep these for a day.
            cached = (("Content-Type", _STATIC[name]), ("Cache-Control", "private, max-age=86400"), _DYNAMIC[1])
            return Response(200, self._static[name], cached)
        if path not in ("/", "/ui/live", "/ui/status.json"):
            return Response(404, b'{"status":"error","reason":"not found; the status page is at /"}')
        try:
            facts = await self.facts()
        except StoreError as exc:
            reason = json.dumps({"status": "error", "reason": f"the store cannot be read: {exc}"})
            return Response(503, reason.encode(), (("Content-Type", "application/json"), *_DYNAMIC))
        view = board(facts, self._paces, self._scrubber(), self.language)
        if path == "/ui/status.json":
            doc = json.dumps(_data(view), ensure_ascii=False).encode()
            return Response(200, doc, (("Content-Type", "application/json; charset=utf-8"), *_DYNAMIC))
        template = "page.html" if path == "/" else "live.html"
        html = self._env.get_template(template).render(b=view, refresh=self.refresh, version=__version__)
        headers = (("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", _CSP), *_DYNAMIC)
        return Response(200, html.encode(), headers)

    def _scrubber(self) -> Scrubber:
        """The scrubber of the config in use, built once per config, and hiding the secrets of every config used
        before it too (a stored error may quote a token a reload has since replaced)."""
        config = self._daemon.config
        if self._scrub is None or self._scrub_for is not config:
            self._scrub = Scrubber(config, also=self._scrub.hidden if self._scrub is not None else ())
            self._scrub_for = config
        return self._scrub

    @property
    def language(self) -> str:
        """The page's language: `[messages] language` (a reload applies)."""
        return self._daemon.config.messages.language

    @property
    def refresh(self) -> float:
        """Seconds between two updates of the live part."""
        return min(max(self._daemon.config.watch.interval, REFRESH_MIN), REFRESH_MAX)

    async def facts(self) -> Facts:
        """What the page shows now, from the store (the truth every replica shares) and this daemon."""
        daemon = self._daemon
        ids = daemon.config.watch.ids
        expected = daemon.answer_expected_within()
        return Facts(
            config=daemon.config,
            now=self._clock(),
            states=await self._store.load_states(ids),
            zones={task_id: daemon.windows.zone_for(task_id) for task_id in ids},
            zone=daemon.zones.zone(),
            events=await self._store.recent_events(RECENT_EVENTS),
            counts=await self._store.outbox_counts(),
            report=await self._store.delivery_report(),
            api=ApiHealth(
                outage=daemon.api_outage,
                silent_for=max(0.0, self._monotonic() - daemon.last_answer),
                # As /readyz judges it: a quiet night of slow polling is not an outage.
                silent_limit=None if expected is None else READY_INTERVALS * expected + daemon.config.api.timeout,
            ),
        )


def _data(view: Board) -> dict[str, Any]:
    """The board as JSON-ready data (the words stay on the page)."""
    doc = dataclasses.asdict(view)
    del doc["words"]
    return doc
