"""Local stand-ins for chat platforms, answering as their documentation says they do (on 127.0.0.1 only).

- `FeishuBot`: a Feishu / Lark custom bot's webhook. It answers HTTP 200 with a JSON code: 0 on success; 19021 when
  the signature (HMAC-SHA256 keyed with "timestamp\\nsecret" over nothing, base64) does not match or the timestamp is
  more than an hour from its clock; 9499 for a body it cannot read or one over 20 KB; 404 for an unknown token.
  `codes` scripts refusals (11232 frequency limited, 19024 keyword...).
- `TeamsWorkflow`: a Power Automate "When a Teams webhook request is received" trigger. 401 for a missing or wrong
  `sig`, 400 for a body that is not JSON, 202 with an empty body once it has the request (what the flow later does
  with the card is not its answer); `replies` scripts other answers (429 with Retry-After...).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from watcher.httpserver import Request, Response, serve

FEISHU_TOKEN = "0f1e2d3c-feishu-bot-token-4b5a"
FEISHU_SECRET = "fs-sign-secret-7Hq2vX9k"
TEAMS_SIG = "Zm9yZ2VkLXNpZ25hdHVyZS1mb3ItdGVzdHM"

FEISHU_MESSAGES = {
    9499: "Bad Request",
    11232: "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]",
    19021: "sign match fail or timestamp is not within one hour from current time",
    19022: "Ip Not Allowed",
    19024: "Key Words Not Found",
}


def _json(status: int, document: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body = json.dumps(document).encode()
    return Response(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers))


def feishu_sign(secret: str, timestamp: str) -> str:
    """The signature as Feishu's documentation computes it (its Python sample, verbatim in substance)."""
    string_to_sign = f"{timestamp}\n{secret}"
    return base64.b64encode(hmac.new(string_to_sign.encode("utf-8"), digestmod=hashlib.sha256).digest()).decode()


class FeishuBot:
    """A Feishu custom bot's webhook that checks signatures as Feishu does."""

    def __init__(self, secret: str | None = FEISHU_SECRET, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock
        self.codes: list[int] = []  # refusals to answer, consumed first (after the checks Feishu makes itself)
        self.requests: list[Request] = []
        self.accepted: list[dict[str, Any]] = []
        self.url = ""

    def refuse(self, code: int) -> Response:
        return _json(200, {"code": code, "msg": FEISHU_MESSAGES.get(code, "error"), "data": {}})

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if request.method != "POST" or request.path != f"/open-apis/bot/v2/hook/{FEISHU_TOKEN}":
            return _json(404, {"code": 19001, "msg": "param invalid: incoming webhook access token invalid"})
        if len(request.body) > 20 * 1024:
            return self.refuse(9499)
        try:
            body = json.loads(request.body)
        except ValueError:
            return self.refuse(9499)
        if (
            not isinstance(body, dict)
            or body.get("msg_type") != "interactive"
            or not isinstance(body.get("card"), dict)
        ):
            return self.refuse(9499)
        if self.secret is not None:
            timestamp, sign = body.get("timestamp"), body.get("sign")
            if not isinstance(timestamp, str) or not timestamp.isdigit() or not isinstance(sign, str):
                return self.refuse(19021)
            if abs(self.clock() - int(timestamp)) > 3600:
                return self.refuse(19021)
            if not hmac.compare_digest(sign, feishu_sign(self.secret, timestamp)):
                return self.refuse(19021)
        if self.codes:
            return self.refuse(self.codes.pop(0))
        self.accepted.append(body)
        # The documented success answer, redundant fields included.
        return _json(200, {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"})


class TeamsWorkflow:
    """A Workflows webhook trigger: checks `sig`, takes JSON, answers 202."""

    def __init__(self) -> None:
        self.replies: list[Response] = []  # answers to give, consumed first (after the checks)
        self.requests: list[Request] = []
        self.accepted: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if request.query.get("sig") != [TEAMS_SIG]:
            error = {"code": "DirectApiInvalidAuthorizationSignature", "message": "The provided signature is invalid."}
            return _json(401, {"error": error})
        try:
            body = json.loads(request.body)
        except ValueError:
            error = {"code": "InvalidRequestContent", "message": "The request content is not valid JSON."}
            return _json(400, {"error": error})
        if self.replies:
            return self.replies.pop(0)
        self.accepted.append(body)
        return Response(202, b"", ())


@asynccontextmanager
async def serving(platform: FeishuBot | TeamsWorkflow) -> AsyncIterator[str]:
    """Serve a stand-in on a free port of 127.0.0.1; yields the base URL."""
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, platform.handle)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


def feishu_url(base: str) -> str:
    return f"{base}/open-apis/bot/v2/hook/{FEISHU_TOKEN}"


def teams_url(base: str, sig: str = TEAMS_SIG) -> str:
    # As a workflow hands it out: the trigger's path and its query, sig= last.
    return f"{base}/workflows/4f1c0d9e/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"
