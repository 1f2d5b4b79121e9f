"""The log pipeline: secrets are redacted by key and by value, tracebacks included; JSON lines off a terminal."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from watcher.logs import REDACTED, Redact, configure

TOKEN = "api-token-0123456789"


def test_secret_values_are_redacted_anywhere_in_a_string() -> None:
    out = Redact([TOKEN])(None, "info", {"event": "x", "error": f"GET failed with Bearer {TOKEN}!"})
    assert out["error"] == f"GET failed with Bearer {REDACTED}!"


def test_secret_keys_are_redacted_at_any_depth() -> None:
    event = {
        "event": "x",
        "token": "t",
        "body": {"assistant": {"websocketToken": "w", "websocketUrl": "wss://x?token=y"}, "numbers": [81901234]},
        "creator": {"email": "a@example.com"},
    }
    out = Redact()(None, "info", event)
    assert out["token"] == REDACTED
    assert out["body"]["assistant"] == {"websocketToken": REDACTED, "websocketUrl": REDACTED}
    assert out["body"]["numbers"] == REDACTED
    assert out["creator"]["email"] == REDACTED


def test_short_values_are_not_treated_as_secrets() -> None:
    out = Redact(["ab"])(None, "info", {"event": "x", "message": "about tabs"})
    assert out["message"] == "about tabs"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_rendered_lines_are_json_with_level_and_time_and_no_secret_even_in_a_traceback() -> None:
    stream = io.StringIO()
    configure(level="info", fmt="json", secrets=[TOKEN], stream=stream)
    log = structlog.get_logger("t")
    log.debug("hidden")
    try:
        raise RuntimeError(f"boom {TOKEN}")
    except RuntimeError:
        log.exception("poll.crashed", task_id=7)
    [line] = [json.loads(raw) for raw in stream.getvalue().splitlines()]
    assert line["event"] == "poll.crashed"
    assert line["level"] == "error"
    assert line["task_id"] == 7
    assert "timestamp" in line
    assert TOKEN not in stream.getvalue()
    assert "RuntimeError" in line["exception"]


def test_json_lines_keep_japanese_and_chinese_text_verbatim() -> None:
    stream = io.StringIO()
    configure(fmt="json", stream=stream)
    structlog.get_logger("t").info("task.notified", message="Campaign “東京キャンペーン” finished", city="上海")
    assert "東京キャンペーン" in stream.getvalue()
    assert "上海" in stream.getvalue()
    assert json.loads(stream.getvalue())["city"] == "上海"


def test_json_lines_are_utf8_even_on_an_ascii_stream() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")  # what stdout is under LC_ALL=C without Python's UTF-8 mode
    configure(fmt="json", stream=stream)
    structlog.get_logger("t").info("task.notified", message="東京キャンペーン", path="/data/\udcff.db")
    stream.flush()
    line = raw.getvalue().decode("utf-8")
    assert "東京キャンペーン" in line
    assert json.loads(line)["path"] == "/data/\udcff.db"  # a lone surrogate is escaped, the line stays JSON


def test_console_lines_on_an_ascii_stream_escape_what_it_cannot_show() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    configure(fmt="console", stream=stream)
    structlog.get_logger("t").info("task.notified", message="東京")
    stream.flush()
    assert "\\u6771\\u4eac" in raw.getvalue().decode("ascii")
