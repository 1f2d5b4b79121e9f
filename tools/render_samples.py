"""Render what Feishu and Teams receive for a few events into standalone HTML pages that look roughly like each
platform, for the README: docs/samples/feishu.html and docs/samples/teams.html (and, with --png, screenshots of them
taken by headless Chromium, e.g. Debian's `chromium` package).

The pages are drawn from the real payloads (`watcher.notify.feishu.render`, `watcher.notify.teams.card`), read the
way the platform reads them: a card element the page does not know is shown as an error, not skipped. They are an
approximation of each client's look (colours, spacing, fonts), not a screenshot of it.

    python tools/render_samples.py            # rewrite the HTML pages
    python tools/render_samples.py --png      # and their screenshots (needs chromium)
    python tools/render_samples.py --check    # exit 1 if the committed pages differ from what the code renders
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from watcher.detect import make_event
from watcher.model import Event, EventType, TaskSnapshot
from watcher.notify import feishu, teams
from watcher.notify.message import build, build_digest

OUT = Path(__file__).resolve().parent.parent / "docs" / "samples"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TASK_URL = "https://console.voicefox.example/tasks/{id}"

# One campaign per language, with the summary and suggestion VoiceFox writes in the campaign's language.
CAMPAIGNS: dict[str, dict[str, Any]] = {
    "ja": {
        "zone": "+09:00",
        "clock": "18:00",
        "name": "春の更新リマインド",
        "summary": "1,200 件に発信し、812 件が応答、388 件が未応答でした。",
        "suggestion": "未応答の 388 件に、明日 10:00 以降に再発信してください。",
    },
    "zh-Hans": {
        "zone": "+08:00",
        "clock": "17:00",
        "name": "双十一会员回访",
        "summary": "共拨打 1,200 个号码，接通 812 个，未接通 388 个。",
        "suggestion": "建议明天 10:00 后重拨未接通的 388 个号码。",
    },
}
KINDS = ("failed", "stalled", "finished")


def sample_event(kind: str, language: str) -> Event:
    """A `kind` event of the language's campaign, as the watcher records it."""
    c = CAMPAIGNS[language]
    fields = {"name": c["name"], "total": 1200, "collection_rate": 41, "summary": c["summary"]}
    fields["suggestion"] = c["suggestion"]
    running = TaskSnapshot(id=1001, status="running", progress=64, **fields)
    if kind == "failed":
        event = make_event(
            EventType.FAILED, NOW, TaskSnapshot(id=1001, status="stop.abnormal", progress=64, **fields), running
        )
    elif kind == "stalled":
        event = make_event(EventType.STALLED, NOW, running, running, stalledForSeconds=1800)
    else:
        done = TaskSnapshot(id=1001, status="done", **{**fields, "progress": 100, "collection_rate": 68})
        event = make_event(EventType.FINISHED, NOW, done, running)
    return Event(event.id, event.type, event.time, event.subject, {**event.data, "timeZone": c["zone"]})


def samples() -> list[tuple[str, Event]]:
    """(language, event) for each kind of event, both languages side by side."""
    return [(language, sample_event(kind, language)) for kind in KINDS for language in CAMPAIGNS]


def digest_events(language: str) -> list[Event]:
    """The events a digest of the language's campaigns lists: the three kinds, and a finish of a second campaign."""
    events = [sample_event(kind, language) for kind in ("finished", *KINDS[:2])]
    other = events[0]
    data = {**other.data, "task": {**other.data["task"], "id": 1002, "name": other.data["task"]["name"] + " 2"}}
    return [Event(other.id[:-1] + "2", other.type, other.time, "1002", data), *events]


# -- Feishu ------------------------------------------------------------------------------------------------------

# Header colours of Feishu's card templates.
FEISHU_HEADER = {"red": "#f54a45", "orange": "#ff8800", "green": "#34c724", "blue": "#3370ff"}


def _feishu_text(text: dict[str, Any]) -> str:
    content = html.escape(text["content"])
    if text["tag"] == "plain_text":
        return content.replace("\n", "<br>")
    if text["tag"] == "lark_md":  # the renderer only ever puts a bold label here
        return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", content)
    raise ValueError(f"unknown text tag {text['tag']!r}")


def feishu_card(payload: dict[str, Any]) -> str:
    """A Feishu card as HTML, from the payload the notifier posts."""
    assert payload["msg_type"] == "interactive"
    card = payload["card"]
    header = card["header"]
    parts = [
        f'<div class="fs-header" style="background:{FEISHU_HEADER[header["template"]]}">'
        f"{_feishu_text(header['title'])}</div>",
        '<div class="fs-body">',
    ]
    for element in card["elements"]:
        tag = element["tag"]
        if tag == "div" and "fields" in element:
            cells = "".join(f'<div class="fs-field">{_feishu_text(f["text"])}</div>' for f in element["fields"])
            parts.append(f'<div class="fs-fields">{cells}</div>')
        elif tag == "div" and "extra" in element:  # a line with a button on its right (a digest's items)
            extra = element["extra"]
            if extra["tag"] != "button":
                raise ValueError(f"unknown Feishu card element {extra['tag']!r} in a div's extra")
            button = f'<span class="fs-button fs-{extra["type"]}">{_feishu_text(extra["text"])}</span>'
            parts.append(f'<div class="fs-div fs-line"><span>{_feishu_text(element["text"])}</span>{button}</div>')
        elif tag == "div":
            parts.append(f'<div class="fs-div">{_feishu_text(element["text"])}</div>')
        elif tag == "action":
            buttons = "".join(
                f'<span class="fs-button fs-{b["type"]}">{_feishu_text(b["text"])}</span>' for b in element["actions"]
            )
            parts.append(f'<div class="fs-action">{buttons}</div>')
        elif tag == "hr":
            parts.append('<hr class="fs-hr">')
        elif tag == "note":
            parts.append(f'<div class="fs-note">{"".join(_feishu_text(e) for e in element["elements"])}</div>')
        else:
            raise ValueError(f"unknown Feishu card element {tag!r}")
    parts.append("</div>")
    return f'<div class="fs-card">{"".join(parts)}</div>'


FEISHU_CSS = """
body { background: #f2f3f5; margin: 0; padding: 24px; font: 14px/1.6 "PingFang SC", "Noto Sans CJK SC", sans-serif; }
:lang(ja) { font-family: "Hiragino Sans", "Noto Sans CJK JP", sans-serif; }
h1 { font-size: 16px; color: #1f2329; margin: 0 0 16px; }
.grid { display: grid; grid-template-columns: repeat(2, 520px); gap: 20px 28px; }
.msg { display: flex; gap: 10px; }
.avatar { width: 36px; height: 36px; border-radius: 50%; background: #3370ff; color: #fff; flex: none;
  display: flex; align-items: center; justify-content: center; font-weight: 600; }
.who { font-size: 12px; color: #646a73; margin-bottom: 4px; }
.who b { color: #1f2329; font-weight: 500; margin-right: 6px; }
.fs-card { width: 460px; background: #fff; border: 1px solid #dee0e3; border-radius: 8px; overflow: hidden; }
.fs-header { color: #fff; font-size: 16px; font-weight: 600; padding: 12px 16px; line-height: 1.5; }
.fs-body { padding: 12px 16px; color: #1f2329; }
.fs-fields { display: grid; grid-template-columns: 1fr 1fr; gap: 4px 12px; margin-bottom: 8px; }
.fs-div { margin: 4px 0; white-space: normal; }
.fs-action { margin: 12px 0 4px; }
.fs-button { display: inline-block; padding: 4px 14px; border-radius: 6px; font-size: 14px; }
.fs-primary { background: #3370ff; color: #fff; }
.fs-default { border: 1px solid #d0d3d6; color: #1f2329; font-size: 12px; padding: 0 10px; white-space: nowrap; flex: none; }
.fs-line { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
.fs-hr { border: 0; border-top: 1px solid #dee0e3; margin: 12px 0 8px; }
.fs-note { color: #8f959e; font-size: 12px; }
.caption { font-size: 12px; color: #8f959e; margin: 0 0 6px 46px; }
"""


# -- Teams -------------------------------------------------------------------------------------------------------

TEAMS_COLOR = {
    "attention": "#c4314b",
    "warning": "#c19c00",
    "good": "#237b4b",
    "accent": "#5b5fc7",
    "default": "#242424",
}
_UNESCAPE = re.compile(r"\\([\\`*_~\[\]\-+>#.])")


def _teams_markdown(text: str) -> str:
    # The notifier escapes TextBlock and Fact text; Teams shows it without the escapes.
    return html.escape(_UNESCAPE.sub(r"\1", text)).replace("\n", "<br>")


def _teams_style(item: dict[str, Any]) -> str:
    style = [f"color:{TEAMS_COLOR[item.get('color', 'default').lower()]}"]
    if item.get("weight", "").lower() == "bolder":
        style.append("font-weight:700")
    size = item.get("size", "default").lower()
    style.append({"small": "font-size:12px", "medium": "font-size:17px", "large": "font-size:21px"}.get(size, ""))
    if item.get("isSubtle"):
        style.append("opacity:.7")
    return ";".join(s for s in style if s)


def _teams_run(run: dict[str, Any]) -> str:
    text = html.escape(run["text"]).replace(chr(10), "<br>")
    if "selectAction" in run:  # a link (a digest's items): Teams underlines it in the accent colour
        return f'<span class="ac-link">{text}</span>'
    return f'<span style="{_teams_style(run)}">{text}</span>'


def _teams_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    parts = []
    for block in blocks:
        separator = ' class="ac-sep"' if block.get("separator") else ""
        kind = block["type"]
        if kind == "RichTextBlock":
            runs = "".join(_teams_run(run) for run in block["inlines"])
            parts.append(f'<div{separator}><p class="ac-text">{runs}</p></div>')
        elif kind == "Container":
            parts.append(f"<div{separator}>{''.join(_teams_blocks(block['items']))}</div>")
        elif kind == "TextBlock":
            parts.append(
                f'<div{separator}><p class="ac-text" style="{_teams_style(block)}">{_teams_markdown(block["text"])}</p></div>'
            )
        elif kind == "FactSet":
            rows = "".join(
                f"<tr><th>{_teams_markdown(f['title'])}</th><td>{_teams_markdown(f['value'])}</td></tr>"
                for f in block["facts"]
            )
            parts.append(f'<table class="ac-facts">{rows}</table>')
        else:
            raise ValueError(f"unknown Adaptive Card element {kind!r}")
    return parts


def teams_card(card: dict[str, Any]) -> str:
    """An Adaptive Card as Teams draws it, roughly, from the card the notifier posts."""
    assert card["type"] == "AdaptiveCard"
    parts = _teams_blocks(card["body"])
    actions = "".join(
        f'<span class="ac-button">{html.escape(a["title"])}</span>'
        for a in card.get("actions", [])
        if a["type"] == "Action.OpenUrl"
    )
    if actions:
        parts.append(f'<div class="ac-actions">{actions}</div>')
    return f'<div class="ac-card">{"".join(parts)}</div>'


TEAMS_CSS = """
body { background: #f5f5f5; margin: 0; padding: 24px;
  font: 14px/1.45 "Segoe UI", "Noto Sans CJK SC", sans-serif; color: #242424; }
:lang(ja) { font-family: "Segoe UI", "Yu Gothic UI", "Noto Sans CJK JP", sans-serif; }
h1 { font-size: 16px; margin: 0 0 16px; }
.grid { display: grid; grid-template-columns: repeat(2, 540px); gap: 20px 28px; }
.post { background: #fff; border-radius: 6px; box-shadow: 0 1px 2px rgba(0,0,0,.12); padding: 12px 16px; }
.who { font-size: 12px; color: #616161; margin-bottom: 8px; }
.who b { color: #242424; margin-right: 6px; }
.ac-card { border: 1px solid #e0e0e0; border-radius: 4px; padding: 14px 16px; }
.ac-text { margin: 0 0 8px; }
.ac-facts { border-collapse: collapse; margin: 4px 0 10px; }
.ac-facts th { text-align: left; font-weight: 600; padding: 1px 16px 1px 0; vertical-align: top; white-space: nowrap; }
.ac-facts td { padding: 1px 0; }
.ac-sep { border-top: 1px solid #e0e0e0; padding-top: 8px; margin-top: 8px; }
.ac-actions { margin-top: 10px; }
.ac-button { display: inline-block; border: 1px solid #d1d1d1; border-radius: 4px; padding: 5px 12px;
  font-weight: 600; }
.ac-link { color: #5b5fc7; text-decoration: underline; }
.caption { font-size: 12px; color: #616161; margin: 0 0 6px; }
"""


# -- the pages ---------------------------------------------------------------------------------------------------


def _page(title: str, css: str, cells: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{css}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        '<div class="grid">\n' + "\n".join(cells) + "\n</div>\n"
        "<script>document.body.dataset.height = document.documentElement.scrollHeight;</script>\n"
        "</body>\n</html>\n"
    )


def pages() -> dict[str, str]:
    """The sample pages by file name."""
    feishu_cells, teams_cells = [], []
    shown: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        (
            language,
            event.type,
            feishu.render(build(event, language=language, task_url=TASK_URL)),
            teams.card(build(event, language=language, task_url=TASK_URL)),
        )
        for language, event in samples()
    ]
    for language in CAMPAIGNS:  # and a digest: several events due at once, as one message
        digest = build_digest(digest_events(language), language=language, task_url=TASK_URL)
        shown.append((language, "digest", feishu.render_digest(digest), teams.digest_card(digest)))
    for language, what, card, adaptive in shown:
        caption, clock = f'<p class="caption">{language} · {what}</p>', CAMPAIGNS[language]["clock"]
        feishu_cells.append(
            f'<div lang="{language}">{caption}<div class="msg"><div class="avatar">V</div><div>'
            f'<div class="who"><b>VoiceFox Watcher</b>{clock}</div>{feishu_card(card)}</div></div></div>'
        )
        teams_cells.append(
            f'<div lang="{language}">{caption}<div class="post"><div class="who"><b>Workflows</b>{clock}</div>'
            f"{teams_card(adaptive)}</div></div>"
        )
    return {
        "feishu.html": _page('Feishu / Lark: interactive cards (kind = "feishu")', FEISHU_CSS, feishu_cells),
        "teams.html": _page('Microsoft Teams: Adaptive Cards 1.4 (kind = "teams")', TEAMS_CSS, teams_cells),
    }


def screenshot(page: Path, png: Path, chromium: str) -> None:
    """A PNG of the whole page: its height is read from the page first, then the window is made that tall."""
    common = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,800"]
    with tempfile.TemporaryDirectory() as profile:
        common.append(f"--user-data-dir={profile}")
        # chromium from PATH, given our own page's file URL: no untrusted input (S603).
        dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, check=True)  # noqa: S603
        found = re.search(r'data-height="(\d+)"', dom.stdout)
        if found is None:
            raise RuntimeError(f"chromium did not run {page.name}'s script: no data-height in its DOM")
        size = f"--window-size=1200,{found.group(1)}"
        subprocess.run([*common, size, f"--screenshot={png}", page.as_uri()], capture_output=True, check=True)  # noqa: S603


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--png", action="store_true", help="also take screenshots with headless chromium")
    parser.add_argument("--check", action="store_true", help="exit 1 if the pages in --out are not up to date")
    args = parser.parse_args(argv)
    rendered = pages()
    if args.check:
        stale = [
            n
            for n, text in rendered.items()
            if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"{args.out / name} is not what the notifiers render now: run python tools/render_samples.py --png")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(args.out / name)
    if args.png:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            print("no chromium: apt-get install chromium (a browser a tool downloads itself will not do here)")
            return 1
        for name in rendered:
            page = args.out / name
            screenshot(page, page.with_suffix(".png"), chromium)
            print(page.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
