"""The README's rendered samples (docs/samples/) show what the Feishu and Teams notifiers send now."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).parent.parent / "tools" / "render_samples.py"


def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_samples", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_sample_pages_are_what_the_notifiers_render_now(capsys: pytest.CaptureFixture[str]) -> None:
    """A change to what a card says fails here until `python tools/render_samples.py --png` is run again."""
    assert tool().main(["--check"]) == 0, capsys.readouterr().out


def test_the_sample_pages_draw_every_card_from_its_real_payload() -> None:
    pages = tool().pages()
    for page in pages.values():
        for name in ("春の更新リマインド", "双十一会员回访", "voicefox.task.failed", "voicefox.task.stalled"):
            assert name in page
        assert page.count('lang="ja"') == page.count('lang="zh-Hans"') == 4  # three events and a digest
        assert "ja · digest" in page and "voicefox-watcher からのアラート 4 件" in page
    assert "#f54a45" in pages["feishu.html"] and "#34c724" in pages["feishu.html"]  # red failed, green finished
    assert "タスクを開く" in pages["teams.html"] and "打开任务" in pages["teams.html"]


def test_a_card_element_the_page_does_not_know_is_an_error_not_a_silent_gap() -> None:
    render_samples = tool()
    with pytest.raises(ValueError, match="unknown Feishu card element"):
        render_samples.feishu_card(
            {
                "msg_type": "interactive",
                "card": {
                    "header": {"template": "red", "title": {"tag": "plain_text", "content": "x"}},
                    "elements": [{"tag": "img"}],
                },
            }
        )
    with pytest.raises(ValueError, match="unknown Adaptive Card element"):
        render_samples.teams_card({"type": "AdaptiveCard", "body": [{"type": "Image", "url": "x"}]})
