"""Child workers get every tuning setting: the argument list comes from the settings' own flag table."""

from __future__ import annotations

import dataclasses

from callpulse.cli import build_settings, parser
from callpulse.processes import worker_args
from callpulse.settings import WORKER_FLAGS, Settings

ENV = {"CALLPULSE_KAFKA": "127.0.0.1:9", "CALLPULSE_REDIS": "redis://127.0.0.1:1/0"}


def _tuned() -> Settings:
    return Settings(
        session_timeout_s=3.5,
        batch_max=123,
        fetch_max_wait_ms=7,
        consumer_group="g-tuned",
        sweep_interval_s=0.25,
    )


def test_every_worker_flag_names_a_settings_field() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {flag.field for flag in WORKER_FLAGS} <= fields


def test_child_worker_arguments_carry_every_tuning_field() -> None:
    tuned = _tuned()
    args = parser().parse_args(worker_args(tuned, web_port=6070))
    rebuilt = build_settings(args, env=ENV)
    for flag in WORKER_FLAGS:
        assert getattr(rebuilt, flag.field) == getattr(tuned, flag.field), flag.flag
    assert args.web_port == 6070


def test_the_tuned_values_differ_from_the_defaults() -> None:
    # Otherwise the round trip above would pass with the flags dropped.
    tuned, default = _tuned(), Settings()
    assert all(getattr(tuned, f.field) != getattr(default, f.field) for f in WORKER_FLAGS)
