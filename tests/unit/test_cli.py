"""The command line: each subcommand's --help lists only the settings it reads, each with its default; the demo
decides from the user's words alone whether it may write into a broker or a Redis it did not start."""

from __future__ import annotations

import argparse

import pytest

from callpulse import cli
from callpulse.demo import choose

ALL_SETTING_FLAGS = {f.flag for f in cli.SETTING_FLAGS.values()}


def help_text(command: str) -> str:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return str(sub.choices[command].format_help())


@pytest.mark.parametrize("command", sorted(cli.COMMAND_SETTINGS))
def test_help_lists_only_the_settings_the_command_reads(command: str) -> None:
    text = help_text(command)
    mine = {cli.SETTING_FLAGS[d].flag for d in cli.COMMAND_SETTINGS[command]}
    for flag in ALL_SETTING_FLAGS:
        assert (f"{flag} CALLPULSE_" in text) == (flag in mine), f"{command} --help and {flag}"


@pytest.mark.parametrize("command", sorted(cli.COMMAND_SETTINGS))
def test_every_option_in_help_shows_its_default(command: str) -> None:
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    formatter = cli._Help(f"callpulse {command}")
    for action in sub.choices[command]._actions:
        if action.option_strings == ["-h", "--help"] or isinstance(action, argparse._StoreTrueAction):
            continue
        shown = formatter._get_help_string(action) or ""
        assert "default" in shown, f"{command} {action.option_strings}: {shown!r}"


def test_settings_help_names_variable_and_default() -> None:
    text = " ".join(help_text("monitor").split())
    assert "--http CALLPULSE_HTTP monitor bind address, host:port (env CALLPULSE_HTTP; default: 127.0.0.1:8700)" in text
    assert "--token CALLPULSE_TOKEN monitor access token (env CALLPULSE_TOKEN; default: unset)" in text
    assert "--kafka" not in text, "the monitor reads Redis, not Kafka"


def test_worker_flags_still_build_settings() -> None:
    args = cli.parser().parse_args(["worker", "--kafka", "k:1", "--batch-max", "10", "--web-host", "0.0.0.0"])
    settings = cli.build_settings(args, env={})
    assert (settings.kafka, settings.batch_max, args.web_host) == ("k:1", 10, "0.0.0.0")


def test_explicitly_set_means_a_flag_or_a_variable() -> None:
    bare = cli.parser().parse_args(["demo"])
    assert not cli.explicitly_set(bare, "kafka", {})
    assert cli.explicitly_set(bare, "kafka", {"CALLPULSE_KAFKA": "localhost:9092"})
    assert cli.explicitly_set(cli.parser().parse_args(["demo", "--redis", "redis://r/0"]), "redis", {})
    assert cli.parser().parse_args(["demo", "--use-running"]).use_running


def test_demo_uses_a_running_server_only_when_told_and_it_answers() -> None:
    use, line = choose("Kafka broker", "CALLPULSE_KAFKA", "localhost:9092", told=False, answers=True)
    assert not use
    assert line == (
        "a Kafka broker answers at localhost:9092, but the demo writes only into servers it is given: "
        "starting an embedded one (to use that one, pass --use-running or set CALLPULSE_KAFKA)"
    )
    assert choose("Redis", "CALLPULSE_REDIS", "redis://r/0", told=True, answers=True)[0]
    use, line = choose("Redis", "CALLPULSE_REDIS", "redis://r/0", told=True, answers=False)
    assert not use and "does not answer: starting an embedded one instead" in line
    assert choose("Redis", "CALLPULSE_REDIS", "redis://r/0", told=False, answers=False) == (
        False,
        "starting an embedded Redis",
    )
