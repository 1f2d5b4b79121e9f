"""Configuration: what loads, what the defaults are, and that every mistake is a ConfigError naming its key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pydantic
import pytest

from watcher import config
from watcher.cli import main
from watcher.config import Config, LogNotifierConfig, SlackNotifierConfig, WebhookNotifierConfig, parse_duration
from watcher.errors import ConfigError
from watcher.notify.apprise import AppriseNotifierConfig
from watcher.notify.dingtalk import DingTalkNotifierConfig
from watcher.notify.email import EmailNotifierConfig
from watcher.notify.feishu import FeishuNotifierConfig
from watcher.notify.teams import TeamsNotifierConfig
from watcher.notify.wecom import WeComNotifierConfig

TOKEN = "vf-token-SECRET-0123456789"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes
SLACK_URL = "https://hooks.slack.com/services/T000/B000/SLACKPATHSECRET"
FEISHU_URL = "https://open.feishu.cn/open-apis/bot/v2/hook/0f1e2d3c-FEISHUTOKEN"
TEAMS_URL = "https://prod-07.japaneast.logic.azure.com:443/workflows/4f1c/triggers/manual/paths/invoke?api-version=1&sig=TEAMSSIG"
ENV = {
    "VOICEFOX_TOKEN": TOKEN,
    "WEBHOOK_SECRET": WHSEC,
    "SLACK_WEBHOOK_URL": SLACK_URL,
    "DINGTALK_WEBHOOK_URL": "https://oapi.dingtalk.com/robot/send?access_token=DINGTALKTOKENSECRET",
    "DINGTALK_SECRET": "SECdingtalksigningsecret0123456789",
    "WECOM_WEBHOOK_URL": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=WECOMKEYSECRET",
    "FEISHU_WEBHOOK_URL": FEISHU_URL,
    "FEISHU_BOT_SECRET": "fs-sign-secret-7Hq2vX9k",
    "TEAMS_WEBHOOK_URL": TEAMS_URL,
    "SMTP_PASSWORD": "smtp-pass",
    "APPRISE_URL": "ntfys://ntfy.example.com/voicefox",
}

MINIMAL = """
[api]
token = "tok"

[watch]
tasks = [1001]
"""

FULL = """
[api]
base_url = "https://openapi.voicefox.cn"
token = "${VOICEFOX_TOKEN}"
timeout = "5s"

[watch]
tasks = [1001, 1002, 1003]
interval = "2m"
progress_step = 25
stall_after = "1h"
concurrency = 4

[store]
path = "/var/lib/voicefox-watcher/state.db"

[delivery]
timeout = "3s"
max_age = "2d"
backoff_max = "10m"
shutdown_grace = "500ms"

[log]
level = "debug"
format = "json"

[[notifiers]]
kind = "webhook"
name = "ops-hook"
url = "https://hooks.example.com/voicefox"
secret = "${WEBHOOK_SECRET}"
events = ["*", "!voicefox.task.observed"]

[[notifiers]]
kind = "slack"
name = "ops-slack"
url = "${SLACK_WEBHOOK_URL}"

[[notifiers]]
kind = "log"
name = "log"
"""


def from_text(text: str, env: dict[str, str] | None = None) -> Config:
    return config.validate(tomllib.loads(text), source="test.toml", env=ENV if env is None else env)


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_text(text, env)
    assert info.value.source == "test.toml"
    return info.value.problems


def keys_of(problems: list[str]) -> list[str]:
    """The key path each problem line starts with."""
    return [p.split(": ", 1)[0] for p in problems]


def test_minimal_config_loads() -> None:
    cfg = from_text(MINIMAL)
    assert cfg.api.token.get_secret_value() == "tok"
    assert cfg.watch.tasks == [1001]


def test_minimal_config_gets_the_documented_defaults() -> None:
    cfg = from_text(MINIMAL)
    assert cfg.api.base_url == "https://openapi.voicefox.ai"
    assert cfg.api.timeout == 10.0
    assert cfg.watch.interval == 30.0
    assert cfg.watch.progress_step == 10
    assert cfg.watch.stall_after == 900.0
    assert cfg.watch.concurrency == 8
    assert cfg.store.path == Path("voicefox-watcher.db")
    assert cfg.delivery.timeout == 10.0
    assert cfg.delivery.max_age == 86400.0
    assert cfg.delivery.backoff_max == 300.0
    assert cfg.delivery.shutdown_grace == 10.0
    assert cfg.log.level == "info"
    assert cfg.log.format == "auto"
    assert cfg.notifiers == []


def test_full_config_loads_every_key() -> None:
    cfg = from_text(FULL)
    assert cfg.api.base_url == "https://openapi.voicefox.cn"
    assert cfg.api.token.get_secret_value() == TOKEN
    assert cfg.api.timeout == 5.0
    assert cfg.watch.tasks == [1001, 1002, 1003]
    assert (cfg.watch.interval, cfg.watch.progress_step, cfg.watch.stall_after, cfg.watch.concurrency) == (
        120.0,
        25,
        3600.0,
        4,
    )
    assert cfg.store.path == Path("/var/lib/voicefox-watcher/state.db")
    assert (cfg.delivery.timeout, cfg.delivery.max_age, cfg.delivery.backoff_max, cfg.delivery.shutdown_grace) == (
        3.0,
        172800.0,
        600.0,
        0.5,
    )
    assert (cfg.log.level, cfg.log.format) == ("debug", "json")
    hook, slack, log = cfg.notifiers
    assert isinstance(hook, WebhookNotifierConfig)
    assert hook.url == "https://hooks.example.com/voicefox"
    assert hook.secret is not None
    assert hook.secret.get_secret_value() == WHSEC
    assert hook.events == ["*", "!voicefox.task.observed"]
    assert isinstance(slack, SlackNotifierConfig)
    assert slack.url.get_secret_value() == SLACK_URL
    assert slack.events is None
    assert isinstance(log, LogNotifierConfig)
    assert log.name == "log"


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    cfg = config.load(example, env=ENV)
    assert [n.name for n in cfg.notifiers] == [
        "ops-hook",
        "ops-slack",
        "ops-dingtalk",
        "ops-wecom",
        "ops-feishu",
        "ops-teams",
        "ops-mail",
        "oncall-phones",
        "log",
    ]


def test_config_is_immutable() -> None:
    cfg = from_text(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        cfg.watch.interval = 1.0


def test_load_reads_a_file_and_resolves_a_relative_store_path_against_it(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text(MINIMAL + '\n[store]\npath = "state/watcher.db"\n', encoding="utf-8")
    cfg = config.load(path, env={})
    assert cfg.store.path == tmp_path.resolve() / "state" / "watcher.db"


def test_a_store_path_that_is_a_directory_is_a_config_error_suggesting_a_file_in_it(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text(MINIMAL + '\n[store]\npath = "data"\n', encoding="utf-8")
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    data = tmp_path.resolve() / "data"
    assert info.value.problems == [
        f"store.path: {data} is a directory; give a file inside it, e.g. {data}/state.db (line 9)"
    ]


def test_load_keeps_an_absolute_store_path(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text(MINIMAL + '\n[store]\npath = "/srv/watcher.db"\n', encoding="utf-8")
    assert config.load(path, env={}).store.path == Path("/srv/watcher.db")


# --- ${VAR} --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${A}", "alpha"),
        ("prefix-${A}", "prefix-alpha"),
        ("${A}-suffix", "alpha-suffix"),
        ("x${A}y${B}z", "xalphaybetaz"),
        ("${A}${A}", "alphaalpha"),
        ("${NESTED}", "${A}"),  # a value is inserted as is, never expanded again
        ("${EMPTY}", ""),
        ("$A-and-{A}-stay", "$A-and-{A}-stay"),
    ],
)
def test_variables_are_expanded_anywhere_in_a_string(value: str, expected: str) -> None:
    env = {"A": "alpha", "B": "beta", "NESTED": "${A}", "EMPTY": ""}
    cfg = from_text(f"[api]\ntoken = 'tok:{value}'\n[watch]\ntasks = [1]\n", env)
    assert cfg.api.token.get_secret_value() == f"tok:{expected}"


def test_variables_are_expanded_in_every_section() -> None:
    env = {"HOST": "vf.example", "TOK": "t0k", "SECS": "45", "DIR": "/data", "HOOK": "hooks.example.com", "W": WHSEC}
    cfg = from_text(
        """
        [api]
        base_url = "https://${HOST}/"
        token = "Bearer-less-${TOK}"
        timeout = "${SECS}s"
        [watch]
        tasks = [1]
        interval = "${SECS}"
        [store]
        path = "${DIR}/state.db"
        [[notifiers]]
        kind = "webhook"
        name = "h"
        url = "https://${HOOK}/in"
        secret = "${W}"
        """,
        env,
    )
    assert cfg.api.base_url == "https://vf.example/"
    assert cfg.api.token.get_secret_value() == "Bearer-less-t0k"
    assert cfg.api.timeout == 45.0
    assert cfg.watch.interval == 45.0
    assert cfg.store.path == Path("/data/state.db")
    hook = cfg.notifiers[0]
    assert isinstance(hook, WebhookNotifierConfig)
    assert hook.url == "https://hooks.example.com/in"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[api]\ntoken = "${VOICEFOX_TOKEN}"\n[watch]\ntasks = [1]\n',
            "api.token: environment variable VOICEFOX_TOKEN is not set",
        ),
        (
            '[api]\ntoken = "t"\nbase_url = "https://${VF_HOST}"\n[watch]\ntasks = [1]\n',
            "api.base_url: environment variable VF_HOST is not set",
        ),
        (
            MINIMAL + '[[notifiers]]\nkind = "log"\nname = "a"\n[[notifiers]]\nkind = "slack"\nname = "s"\n'
            'url = "${SLACK_WEBHOOK_URL}"\n',
            "notifiers[1].url: environment variable SLACK_WEBHOOK_URL is not set",
        ),
        (
            MINIMAL + '[[notifiers]]\nkind = "log"\nname = "a"\nevents = ["*", "${EXCLUDE}"]\n',
            "notifiers[0].events[1]: environment variable EXCLUDE is not set",
        ),
    ],
)
def test_missing_variable_is_named_with_its_key_path(text: str, problem: str) -> None:
    assert problem in problems_of(text, env={})


def test_every_missing_variable_is_reported_at_once() -> None:
    problems = problems_of(FULL, env={})
    assert problems[:3] == [
        "api.token: environment variable VOICEFOX_TOKEN is not set",
        "notifiers[0].secret: environment variable WEBHOOK_SECRET is not set",
        "notifiers[1].url: environment variable SLACK_WEBHOOK_URL is not set",
    ]


def test_an_environment_is_not_needed_when_no_variable_is_used() -> None:
    assert from_text(MINIMAL, env={}).api.token.get_secret_value() == "tok"


# --- durations -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        ("90", 90.0),
        (" 2m ", 120.0),
        ("10 s", 10.0),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_duration_forms_parse_to_seconds(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("toml_value", "seconds"), [('"500ms"', 0.5), ('"30s"', 30.0), ('"5m"', 300.0), ('"2h"', 7200.0), ("45", 45.0)]
)
def test_durations_parse_in_a_config(toml_value: str, seconds: float) -> None:
    cfg = from_text(MINIMAL.replace("tasks = [1001]", f"tasks = [1001]\ninterval = {toml_value}"))
    assert cfg.watch.interval == seconds


@pytest.mark.parametrize("value", ["5 minutes", "m", "", "1h30m", "-1s", "1e3s", "ten", True, None, [1]])
def test_bad_duration_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(value)


def test_negative_number_is_not_a_duration() -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-5)


# --- broken configs ------------------------------------------------------------------------------------------------

HOOK = '[[notifiers]]\nkind = "webhook"\nname = "hook"\nurl = "https://hooks.example.com/in"\n'


def with_watch(extra: str) -> str:
    return f'[api]\ntoken = "tok"\n[watch]\ntasks = [1001]\n{extra}\n'


def with_api(extra: str) -> str:
    return f'[api]\ntoken = "tok"\n{extra}\n[watch]\ntasks = [1001]\n'


BROKEN: list[tuple[str, str, str]] = [
    # wrong types
    ("token-int", with_api("").replace('token = "tok"', "token = 123"), "api.token"),
    ("base-url-int", with_api("base_url = 5"), "api.base_url"),
    ("api-not-a-table", 'api = "x"\n[watch]\ntasks = [1]\n', "api"),
    ("tasks-string", '[api]\ntoken = "t"\n[watch]\ntasks = "1001"\n', "watch.tasks"),
    ("task-id-string", '[api]\ntoken = "t"\n[watch]\ntasks = [1001, "1002"]\n', "watch.tasks[1]"),
    ("task-id-float", '[api]\ntoken = "t"\n[watch]\ntasks = [1001.0]\n', "watch.tasks[0]"),
    ("progress-step-string", with_watch('progress_step = "10"'), "watch.progress_step"),
    ("progress-step-float", with_watch("progress_step = 10.5"), "watch.progress_step"),
    ("concurrency-bool", with_watch("concurrency = true"), "watch.concurrency"),
    ("store-path-int", MINIMAL + "[store]\npath = 5\n", "store.path"),
    ("log-level-unknown", MINIMAL + '[log]\nlevel = "verbose"\n', "log.level"),
    ("log-format-int", MINIMAL + "[log]\nformat = 1\n", "log.format"),
    ("notifiers-a-table", MINIMAL + '[notifiers]\nkind = "log"\nname = "l"\n', "notifiers"),
    ("events-a-string", MINIMAL + HOOK + 'events = "*"\n', "notifiers[0].events"),
    ("secret-int", MINIMAL + HOOK + "secret = 5\n", "notifiers[0].secret"),
    # unknown keys, at every level
    ("unknown-top-level-table", MINIMAL + "[apii]\ntoken = 'x'\n", "apii"),
    ("unknown-api-key", with_api('tokne = "t"'), "api.tokne"),
    ("unknown-watch-key", with_watch('intervall = "30s"'), "watch.intervall"),
    ("unknown-store-key", MINIMAL + '[store]\npth = "x.db"\n', "store.pth"),
    ("unknown-delivery-key", MINIMAL + '[delivery]\nmax_ag = "1h"\n', "delivery.max_ag"),
    ("unknown-log-key", MINIMAL + '[log]\nlvl = "info"\n', "log.lvl"),
    ("unknown-webhook-key", MINIMAL + HOOK + 'sceret = "x"\n', "notifiers[0].sceret"),
    (
        "unknown-key-in-second-notifier",
        MINIMAL + HOOK + HOOK.replace('"hook"', '"h2"') + "evnts = []\n",
        "notifiers[1].evnts",
    ),
    (
        "url-on-a-log-notifier",
        MINIMAL + '[[notifiers]]\nkind = "log"\nname = "l"\nurl = "https://x"\n',
        "notifiers[0].url",
    ),
    (
        "secret-on-a-slack-notifier",
        MINIMAL + '[[notifiers]]\nkind = "slack"\nname = "s"\nurl = "https://x"\nsecret = "whsec_x"\n',
        "notifiers[0].secret",
    ),
    # bad durations
    ("interval-words", with_watch('interval = "5 minutes"'), "watch.interval"),
    ("timeout-bad-unit", with_api('timeout = "10x"'), "api.timeout"),
    ("max-age-bool", MINIMAL + "[delivery]\nmax_age = true\n", "delivery.max_age"),
    ("backoff-max-list", MINIMAL + "[delivery]\nbackoff_max = []\n", "delivery.backoff_max"),
    ("stall-after-zero", with_watch('stall_after = "0s"'), "watch.stall_after"),
    ("interval-too-short", with_watch('interval = "50ms"'), "watch.interval"),
    ("delivery-timeout-zero", MINIMAL + "[delivery]\ntimeout = 0\n", "delivery.timeout"),
    # bad URLs and schemes
    ("base-url-no-scheme", with_api('base_url = "openapi.voicefox.ai"'), "api.base_url"),
    ("base-url-ftp", with_api('base_url = "ftp://openapi.voicefox.ai"'), "api.base_url"),
    ("base-url-no-host", with_api('base_url = "https://"'), "api.base_url"),
    (
        "webhook-file-url",
        MINIMAL + HOOK.replace("https://hooks.example.com/in", "file:///etc/passwd"),
        "notifiers[0].url",
    ),
    ("webhook-ws-url", MINIMAL + HOOK.replace("https://", "ws://"), "notifiers[0].url"),
    ("webhook-broken-ipv6", MINIMAL + HOOK.replace("hooks.example.com", "[::1"), "notifiers[0].url"),
    (
        "slack-url-no-scheme",
        MINIMAL + '[[notifiers]]\nkind = "slack"\nname = "s"\nurl = "hooks.slack.com/services/T/B/X"\n',
        "notifiers[0].url",
    ),
    (
        "slack-url-javascript",
        MINIMAL + '[[notifiers]]\nkind = "slack"\nname = "s"\nurl = "javascript:alert(1)"\n',
        "notifiers[0].url",
    ),
    # duplicates and empties
    ("duplicate-notifier-names", MINIMAL + HOOK + HOOK, "notifiers"),
    ("empty-task-list", '[api]\ntoken = "t"\n[watch]\ntasks = []\n', "watch.tasks"),
    ("duplicate-tasks", '[api]\ntoken = "t"\n[watch]\ntasks = [1001, 1002, 1001]\n', "watch.tasks"),
    ("empty-notifier-name", MINIMAL + '[[notifiers]]\nkind = "log"\nname = ""\n', "notifiers[0].name"),
    ("notifier-name-with-space", MINIMAL + '[[notifiers]]\nkind = "log"\nname = "ops hook"\n', "notifiers[0].name"),
    # negative and out-of-range numbers
    ("negative-task-id", '[api]\ntoken = "t"\n[watch]\ntasks = [-1]\n', "watch.tasks[0]"),
    ("zero-task-id", '[api]\ntoken = "t"\n[watch]\ntasks = [0]\n', "watch.tasks[0]"),
    ("negative-progress-step", with_watch("progress_step = -1"), "watch.progress_step"),
    ("progress-step-over-100", with_watch("progress_step = 101"), "watch.progress_step"),
    ("negative-interval", with_watch("interval = -5"), "watch.interval"),
    ("negative-api-timeout", with_api("timeout = -1"), "api.timeout"),
    ("negative-duration-string", with_api('timeout = "-1s"'), "api.timeout"),
    ("negative-shutdown-grace", MINIMAL + "[delivery]\nshutdown_grace = -0.5\n", "delivery.shutdown_grace"),
    ("zero-concurrency", with_watch("concurrency = 0"), "watch.concurrency"),
    # missing required keys
    ("missing-token", '[api]\nbase_url = "https://openapi.voicefox.ai"\n[watch]\ntasks = [1]\n', "api.token"),
    ("missing-api", "[watch]\ntasks = [1]\n", "api"),
    ("missing-watch", '[api]\ntoken = "t"\n', "watch"),
    ("missing-tasks", '[api]\ntoken = "t"\n[watch]\ninterval = "30s"\n', "watch.tasks"),
    ("missing-notifier-name", MINIMAL + '[[notifiers]]\nkind = "log"\n', "notifiers[0].name"),
    ("missing-webhook-url", MINIMAL + '[[notifiers]]\nkind = "webhook"\nname = "h"\n', "notifiers[0].url"),
    # notifier kinds
    ("unknown-notifier-kind", MINIMAL + '[[notifiers]]\nkind = "pigeon"\nname = "m"\n', "notifiers[0].kind"),
    ("notifier-kind-int", MINIMAL + "[[notifiers]]\nkind = 1\nname = 'm'\n", "notifiers[0].kind"),
    ("missing-notifier-kind", MINIMAL + '[[notifiers]]\nname = "h"\nurl = "https://x"\n', "notifiers[0].kind"),
    ("kind-of-second-notifier", MINIMAL + HOOK + '[[notifiers]]\nkind = "Slack"\nname = "s"\n', "notifiers[1].kind"),
    # [health]
    ("health-every-zero", MINIMAL + "[health]\nevery = 0\n", "health.every"),
    ("health-drop-one", MINIMAL + "[health]\nanswer_rate_drop = 1.0\n", "health.answer_rate_drop"),
    ("health-floor-zero", MINIMAL + "[health]\nanswer_rate_floor = 0\n", "health.answer_rate_floor"),
    ("health-calllog-string", MINIMAL + '[health]\ncalllog = "no"\n', "health.calllog"),
    ("health-min-calls-over-window", MINIMAL + "[health]\nwindow = 40\nmin_calls = 50\n", "health"),
    ("health-unknown-key", MINIMAL + "[health]\nanswer_rate = 0.1\n", "health.answer_rate"),
    # Standard Webhooks secrets
    ("whsec-not-base64", MINIMAL + HOOK + 'secret = "whsec_not*base64!"\n', "notifiers[0].secret"),
    ("whsec-too-short", MINIMAL + HOOK + 'secret = "whsec_c2hvcnQ="\n', "notifiers[0].secret"),
    ("whsec-empty", MINIMAL + HOOK + 'secret = ""\n', "notifiers[0].secret"),
]


@pytest.mark.parametrize(("text", "key"), [(t, k) for _, t, k in BROKEN], ids=[i for i, _, _ in BROKEN])
def test_broken_config_is_a_config_error_naming_the_key(text: str, key: str) -> None:
    problems = problems_of(text)
    assert key in keys_of(problems), problems


def test_broken_corpus_is_large_and_its_texts_are_valid_toml() -> None:
    assert len(BROKEN) >= 30
    assert len({i for i, _, _ in BROKEN}) == len(BROKEN)
    for _, text, _ in BROKEN:
        tomllib.loads(text)


def test_every_problem_is_reported_at_once() -> None:
    text = '[api]\ntoken = "t"\ntimeout = "soon"\n[watch]\ntasks = [1, 1]\nintervall = 3\n[log]\nlevel = "loud"\n'
    assert sorted(keys_of(problems_of(text))) == ["api.timeout", "log.level", "watch.intervall", "watch.tasks"]


def test_unknown_key_problem_suggests_a_typo() -> None:
    assert problems_of(with_watch("intervall = 3")) == [
        "watch.intervall: unknown key (a typo? see config.example.toml for the valid keys)"
    ]


def test_unknown_notifier_kind_problem_lists_the_kinds() -> None:
    (problem,) = problems_of(MINIMAL + '[[notifiers]]\nkind = "nope"\nname = "m"\n')
    kinds = ", ".join(config.NOTIFIER_KINDS)  # every registered kind, in the registry's order
    assert problem == f"notifiers[0].kind: 'nope' is not a notifier kind (use one of: {kinds})"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(MINIMAL + HOOK + 'secret = "whsec_U0VDUkVULXZhbA=="\n', id="short-whsec"),
        pytest.param(MINIMAL + HOOK + 'secret = "whsec_SECRET-value!!"\n', id="bad-whsec"),
        pytest.param(
            MINIMAL + '[[notifiers]]\nkind = "slack"\nname = "s"\nurl = "ftp://hooks/SECRET-value"\n', id="slack-url"
        ),
        pytest.param(
            '[api]\ntoken = ["SECRET-value"]\n[watch]\ntasks = [1]\n',
            id="token-list",
        ),
    ],
)
def test_problems_never_quote_a_secret_value(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_text(text)
    assert "SECRET-value" not in str(info.value)
    assert "U0VDUkVULXZhbA" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (with_api("timeout = nan"), "api.timeout"),
        (with_api("timeout = inf"), "api.timeout"),
        (with_watch("interval = inf"), "watch.interval"),
        (with_watch("stall_after = inf"), "watch.stall_after"),
        (MINIMAL + "[delivery]\nshutdown_grace = nan\n", "delivery.shutdown_grace"),
        (MINIMAL + "[delivery]\nmax_age = inf\n", "delivery.max_age"),
    ],
    ids=["timeout-nan", "timeout-inf", "interval-inf", "stall-after-inf", "shutdown-grace-nan", "max-age-inf"],
)
def test_non_finite_duration_is_a_config_error(text: str, key: str) -> None:
    assert key in keys_of(problems_of(text))


def test_zero_api_timeout_is_a_config_error() -> None:
    assert "api.timeout" in keys_of(problems_of(with_api("timeout = 0")))


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('[api]\ntoken = ""\n[watch]\ntasks = [1]\n', {}),
        ('[api]\ntoken = "${VOICEFOX_TOKEN}"\n[watch]\ntasks = [1]\n', {"VOICEFOX_TOKEN": ""}),
    ],
    ids=["literal", "from-empty-variable"],
)
def test_empty_token_is_a_config_error(text: str, env: dict[str, str]) -> None:
    assert "api.token" in keys_of(problems_of(text, env))


# --- files ---------------------------------------------------------------------------------------------------------


def test_toml_syntax_error_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text('[api]\ntoken = "unterminated\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert info.value.source == str(path)
    assert info.value.problems[0].startswith("TOML syntax error")
    assert "line 2" in info.value.problems[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="no such file") as info:
        config.load(path, env={})
    assert info.value.source == str(path)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[api]\ntoken = "caf\xe9"\n[watch]\ntasks = [1]\n')
    with pytest.raises(ConfigError, match="UnicodeDecodeError") as info:
        config.load(path, env={})
    assert info.value.source == str(path)


def test_directory_instead_of_a_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        config.load(tmp_path, env={})


def test_load_reports_key_problems_with_the_file_as_source(tmp_path: Path) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text(with_watch("intervall = 3"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert info.value.source == str(path)
    assert keys_of(info.value.problems) == ["watch.intervall"]
    assert str(info.value).startswith(f"{path}: watch.intervall: ")


# --- secrets -------------------------------------------------------------------------------------------------------


def test_repr_and_str_of_the_config_never_show_secrets() -> None:
    cfg = from_text(FULL)
    shown = [repr(cfg), str(cfg), repr(cfg.api), repr(cfg.notifiers), cfg.model_dump_json(), str(cfg.model_dump())]
    for text in shown:
        for secret in (TOKEN, WHSEC, SLACK_URL, "SLACKPATHSECRET", WHSEC.removeprefix("whsec_")):
            assert secret not in text


# --- through the CLI -----------------------------------------------------------------------------------------------


def test_cli_check_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text(
        '[api]\ntoken = "vf-SECRET-tok"\n[watch]\ntasks = [1001, 1002]\n'
        '[[notifiers]]\nkind = "slack"\nname = "s"\nurl = "https://hooks.slack.com/services/T/B/SLACKSECRET"\n',
        encoding="utf-8",
    )
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"{path}: OK" in out
    assert "2 task(s)" in out
    assert err == ""
    assert "vf-SECRET-tok" not in out
    assert "SLACKSECRET" not in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(with_watch('interval = "soon"'), "watch.interval:", id="bad-duration"),
        pytest.param(with_watch("intervall = 3"), "watch.intervall: unknown key", id="typo"),
        pytest.param('[api]\ntoken = "t"\n[watch]\ntasks = []\n', "watch.tasks:", id="no-tasks"),
        pytest.param(MINIMAL + '[[notifiers]]\nkind = "pigeon"\nname = "m"\n', "notifiers[0].kind:", id="bad-kind"),
        pytest.param('[api\ntoken = "t"\n', "TOML syntax error", id="toml-syntax"),
    ],
)
def test_cli_check_rejects_an_invalid_file_with_exit_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text(content, encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {path}:\n")
    assert f"  {expected}" in err
    assert "Traceback" not in err
    assert "Traceback" not in out


@pytest.mark.parametrize("command", ["check", "run", "once"])
def test_cli_commands_refuse_a_store_path_that_is_a_directory_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = tmp_path / "watcher.toml"
    path.write_text(MINIMAL + f'[store]\npath = "{tmp_path}"\n', encoding="utf-8")
    assert main([command, "-c", str(path)]) == 2
    _, err = capsys.readouterr()
    assert f"  store.path: {tmp_path} is a directory; give a file inside it, e.g. {tmp_path}/state.db" in err
    assert "Traceback" not in err


def test_cli_check_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "absent.toml")]) == 2
    _, err = capsys.readouterr()
    assert "no such file" in err
    assert "Traceback" not in err


def test_cli_check_non_utf8_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "watcher.toml"
    path.write_bytes(b"\xff\xfe\x00[api]")
    assert main(["check", "-c", str(path)]) == 2
    _, err = capsys.readouterr()
    assert "cannot read it" in err
    assert "Traceback" not in err


def test_secrets_can_come_from_files_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-token-value\n")
    (tmp_path / "hook-secret").write_text(WHSEC)
    path = tmp_path / "w.toml"
    path.write_text(
        '[api]\ntoken_file = "token"\n[watch]\ntasks = [1]\n'
        '[[notifiers]]\nkind = "webhook"\nname = "h"\nurl = "https://h.example"\nsecret_file = "hook-secret"\n'
    )
    cfg = config.load(path, env={})
    assert cfg.api.token.get_secret_value() == "file-token-value"
    hook = cfg.notifiers[0]
    assert isinstance(hook, WebhookNotifierConfig)
    assert hook.secret is not None


@pytest.mark.parametrize(
    ("api", "needle"),
    [
        ('token_file = "absent"', "api.token_file: cannot read"),
        ('token = "t"\ntoken_file = "absent"', "api.token_file: give token or token_file, not both"),
        ('token_file = "empty"', "is empty"),
    ],
)
def test_secret_file_problems_name_the_key(tmp_path: Path, api: str, needle: str) -> None:
    (tmp_path / "empty").write_text("\n")
    path = tmp_path / "w.toml"
    path.write_text(f"[api]\n{api}\n[watch]\ntasks = [1]\n")
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert any(needle in p for p in info.value.problems), info.value.problems


def test_problems_carry_the_line_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_text(
        '[api]\ntoken = "t"\n\n[watch]\ntasks = [1]\ninterval = "often"\n\n[[notifiers]]\nkind = "log"\nname = "a"\n\n[[notifiers]]\nkind = "log"\nname = "b"\ncolour = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert any(p.startswith("watch.interval:") and p.endswith("(line 6)") for p in info.value.problems)
    assert any(p.startswith("notifiers[1].colour:") and p.endswith("(line 15)") for p in info.value.problems)


def test_an_unset_variable_is_the_only_problem_reported_for_its_key() -> None:
    raw = tomllib.loads(
        MINIMAL + '\n[[notifiers]]\nkind = "webhook"\nname = "h"\nurl = "https://h.example"\nsecret = "${NOPE}"\n'
    )
    with pytest.raises(ConfigError) as info:
        config.validate(raw, source="t", env={})
    assert info.value.problems == ["notifiers[0].secret: environment variable NOPE is not set"]


def test_an_event_pattern_that_matches_nothing_is_a_typo() -> None:
    raw = tomllib.loads(MINIMAL + '\n[[notifiers]]\nkind = "log"\nname = "l"\nevents = ["voicefox.task.finishd"]\n')
    with pytest.raises(ConfigError) as info:
        config.validate(raw, source="t", env={})
    assert info.value.problems[0].startswith("notifiers[0].events: 'voicefox.task.finishd' matches no event type")


def test_tls_verification_must_be_a_real_boolean() -> None:
    raw = tomllib.loads('[api]\ntoken = "t"\nverify_tls = "no"\n[watch]\ntasks = [1]\n')
    with pytest.raises(ConfigError, match=r"api\.verify_tls"):
        config.validate(raw, source="t", env={})


@pytest.mark.parametrize(
    ("mode", "token", "expected"),
    [
        (0o644, '"literal-token"', ["api.token"]),
        (0o640, '"literal-token"', ["api.token"]),
        (0o600, '"literal-token"', []),
        (0o644, '"${TOKEN}"', []),
    ],
)
def test_literal_secrets_in_a_file_others_can_read_are_flagged(
    tmp_path: Path, mode: int, token: str, expected: list[str]
) -> None:
    path = tmp_path / "w.toml"
    path.write_text(
        f'[api]\ntoken = {token}\n[watch]\ntasks = [1]\n[[notifiers]]\nkind = "slack"\nname = "s"\nurl = "${{SLACK}}"\n'
    )
    path.chmod(mode)
    assert config.literal_secrets_exposed(path) == expected


@pytest.mark.parametrize("token", ["tok\n", "tok en", "tökén", "tok\x00"])
def test_a_token_that_cannot_go_in_a_header_is_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="printable ASCII"):
        config.validate({"api": {"token": token}, "watch": {"tasks": [1]}}, source="t", env={})


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"watch": {"tasks": [1], "stall_after": 10**400}}, "watch.stall_after: 1000"),
        ({"watch": {"tasks": [1], "stall_after": 1e14}}, "longer than a year"),
        ({"watch": {"tasks": [2**63]}}, "watch.tasks[0]"),
        ({"watch": {"tasks": [1]}, "api": {"token": "t", "base_url": "http://127.0.0.1:99999"}}, "invalid port"),
    ],
)
def test_values_that_would_overflow_later_are_refused_now(raw: dict[str, Any], needle: str) -> None:
    raw.setdefault("api", {"token": "t"})
    with pytest.raises(ConfigError) as info:
        config.validate(raw, source="t", env={})
    assert any(needle in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize(("text", "key"), [(t, k) for _, t, k in BROKEN], ids=[i for i, _, _ in BROKEN])
def test_broken_config_through_check_exits_2_naming_key_and_line(
    text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`watcher check` on each broken file: exit 2, the key, the line where the file has it, no traceback."""
    path = tmp_path / "broken.toml"
    path.write_text(text)
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [p for p in err.splitlines() if p.strip().startswith(key + ":") or p.strip().startswith(key + " ")]
    lines = config.key_lines(text)
    where = key
    while where and where not in lines:
        where = where.rpartition(".")[0] if "." in where else where.rpartition("[")[0]
    if where:  # the file has the key or its table: the message says which line
        assert line.endswith(f"(line {lines[where]})"), line


def test_the_example_config_documents_every_key() -> None:
    """config.example.toml shows every key of every section (a new setting must be documented there)."""
    text = (Path(__file__).parent.parent / "config.example.toml").read_text()
    sections: dict[str, type[pydantic.BaseModel]] = {
        "api": config.ApiConfig,
        "watch": config.WatchConfig,
        "store": config.StoreConfig,
        "delivery": config.DeliveryConfig,
        "log": config.LogConfig,
        "http": config.HttpConfig,
        "messages": config.MessagesConfig,
    }
    for section, model in sections.items():
        assert f"[{section}]" in text, section
        for key in model.model_fields:
            if key == "task":  # a table of its own, below
                continue
            assert f"\n{key} = " in text, f"{section}.{key}"
    assert "\n[[watch.task]]\n" in text
    for key in config.TaskConfig.model_fields:
        assert f"\n{key} = " in text, f"watch.task.{key}"
    rules = text[text.index("\n[[rules]]\n") :]
    for key in config.RuleConfig.model_fields:
        assert f"\n{key} = " in rules, f"rules.{key}"
    kinds: list[type[pydantic.BaseModel]] = [
        config.WebhookNotifierConfig,
        config.SlackNotifierConfig,
        FeishuNotifierConfig,
        TeamsNotifierConfig,
        config.LogNotifierConfig,
        DingTalkNotifierConfig,
        WeComNotifierConfig,
        EmailNotifierConfig,
        AppriseNotifierConfig,
    ]
    for model in kinds:
        for key, field in model.model_fields.items():
            key = field.alias or key  # `from` is a keyword in Python: the email settings call it `sender`
            assert f"\n{key} = " in text, f"notifiers.{key}"


def test_the_store_defaults_to_the_state_directory_systemd_or_the_image_gives() -> None:
    raw = {"api": {"token": "t"}, "watch": {"tasks": [1]}}
    cfg = config.validate(raw, source="t", env={"STATE_DIRECTORY": "/var/lib/voicefox-watcher"})
    assert str(cfg.store.path) == "/var/lib/voicefox-watcher/state.db"
    explicit = config.validate({**raw, "store": {"path": "/data/x.db"}}, source="t", env={"STATE_DIRECTORY": "/s"})
    assert str(explicit.store.path) == "/data/x.db"


def test_the_table_of_secrets_names_every_secret_field_of_the_models() -> None:
    """SECRETS feeds log redaction, the readable-config warning and *_file: a new SecretStr field must be in it."""
    sections: list[tuple[str, type[pydantic.BaseModel], str | None]] = [
        (name, field.annotation, None)
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, pydantic.BaseModel)
    ]
    sections += [
        ("notifiers", WebhookNotifierConfig, "webhook"),
        ("notifiers", SlackNotifierConfig, "slack"),
        ("notifiers", FeishuNotifierConfig, "feishu"),
        ("notifiers", TeamsNotifierConfig, "teams"),
        ("notifiers", LogNotifierConfig, "log"),
        ("notifiers", DingTalkNotifierConfig, "dingtalk"),
        ("notifiers", WeComNotifierConfig, "wecom"),
    ]
    found = {
        (section, key, kind)
        for section, model, kind in sections
        for key, field in model.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }
    table = {
        (section, key, kind)
        for section, key, only in config.SECRETS
        for kind in (config.NOTIFIER_KINDS if section == "notifiers" else (None,))
        if only in (None, kind)
    }
    assert found <= table
    assert {("api", "token", None), ("push", "secret", None), ("notifiers", "url", "slack")} <= found  # it looks


def test_every_secret_of_a_loaded_config_is_handed_to_the_log_redaction() -> None:
    raw = {
        "api": {"token": "api-token-123456"},
        "watch": {"tasks": [1]},
        "http": {"listen": "127.0.0.1:0"},
        "push": {"path": "/push", "secret": "push-secret-0123456789"},
        "notifiers": [
            {"kind": "webhook", "name": "w", "url": "https://example.com/h", "secret": "whsec_" + "A" * 32},
            {"kind": "slack", "name": "s", "url": "https://hooks.slack.com/services/T0/B0/xyzSECRET"},
            {"kind": "log", "name": "l"},
        ],
    }
    loaded = config.validate(raw, source="t", env={})
    assert sorted(config.secret_values(loaded)) == sorted(
        [
            "api-token-123456",
            "push-secret-0123456789",
            "whsec_" + "A" * 32,
            "https://hooks.slack.com/services/T0/B0/xyzSECRET",
        ]
    )


def test_watch_task_tables_give_tasks_a_zone_of_their_own_and_check_shows_where_windows_are_read(
    tmp_path: Path,
) -> None:
    import io

    path = tmp_path / "w.toml"
    path.write_text(
        '[api]\ntoken = "t"\n[watch]\ntasks = [1001]\n\n[[watch.task]]\nid = 2001\ntimezone = "Asia/Shanghai"\n'
        "\n[[watch.task]]\nid = 2002\n"
    )
    path.chmod(0o600)
    cfg = config.load(path)
    assert cfg.watch.ids == [1001, 2001, 2002]
    assert {t: z.key for t, z in cfg.watch.task_zones.items()} == {2001: "Asia/Shanghai"}
    out = io.StringIO()
    assert main(["check", "-c", str(path)], stdout=out) == 0
    assert "calling windows read in: found from the API's timestamps" in out.getvalue()
    assert "task 2001: Asia/Shanghai ([[watch.task]] timezone)" in out.getvalue()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tasks = [1]\n[[watch.task]]\nid = 1\n", "watch.tasks: lists task 1 more than once"),
        (
            '[[watch.task]]\nid = 5\ntimezone = "Mars/Olympus"\n',
            'watch.task[0].timezone: "Mars/Olympus" is not a time zone',
        ),
        (
            '[[watch.task]]\nid = 5\ntimezone = "America"\n',  # a directory of zones, not a zone
            'watch.task[0].timezone: "America" is not a time zone',
        ),
        ('[[watch.task]]\nid = 5\nzone = "Asia/Tokyo"\n', "watch.task[0].zone: unknown key"),
        ('[[watch.task]]\ntimezone = "Asia/Tokyo"\n', "watch.task[0].id: is required"),
        ('interval = "30s"\n', "watch.tasks: needs at least one task"),
    ],
)
def test_watch_task_tables_are_checked_like_the_rest(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "w.toml"
    path.write_text(f'[api]\ntoken = "t"\n[watch]\n{text}')
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_health_defaults_are_an_operations_leads() -> None:
    health = from_text(MINIMAL).health
    assert (health.calllog, health.every, health.window, health.min_calls) == (True, 120.0, 100, 50)
    assert (health.answer_rate_drop, health.answer_rate_floor) == (0.5, 0.10)
    assert from_text(MINIMAL + '[health]\ncalllog = false\nevery = "5m"\n').health.every == 300.0


def test_no_task_is_fine_only_if_tasks_can_be_added_at_run_time() -> None:
    base = '[api]\ntoken = "t"\n[watch]\ninterval = "30s"\n'
    assert from_text(base + '[http]\nlisten = "127.0.0.1:9000"\n').watch.ids == []
    assert from_text(base + '[http]\nlisten = "0.0.0.0:9000"\ntoken = "' + "k" * 24 + '"\n').watch.ids == []
    problems = problems_of(base + '[http]\nlisten = "0.0.0.0:9000"\n')
    assert any("[http] token" in p for p in problems), problems
