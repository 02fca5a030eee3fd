"""The KPI catalogue: exact values from counters, and every list of KPIs derived from it (drift tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callpulse import catalogue as cat
from callpulse import provisioning
from callpulse.settings import DEFAULT_RULES, KPI_KEYS, Settings, load_thresholds
from streams import windows as w
from tests import reference

ROOT = Path(__file__).resolve().parents[2]


def test_counter_codes_are_unique_and_at_most_two_letters() -> None:
    codes = [c.code for c in (*cat.COUNTERS, *cat.QUEUE_COUNTERS)]
    assert len(set(codes)) == len(codes)
    assert all(1 <= len(c) <= 2 and c.isalpha() for c in codes)


def test_kpi_keys_are_unique() -> None:
    assert len(set(cat.KPI_KEYS)) == len(cat.CATALOGUE)


def test_settings_accept_exactly_the_catalogue_keys() -> None:
    assert KPI_KEYS == cat.KPI_KEYS


def test_window_fields_are_the_catalogue_counters() -> None:
    assert tuple(c.code for c in cat.COUNTERS) == w.FIELDS
    assert set(w.empty_sums()) == set(w.FIELDS)


def test_kpis_from_sums_gives_every_catalogue_kpi_in_order() -> None:
    assert tuple(w.kpis_from_sums(w.empty_sums())) == cat.KPI_KEYS


def test_oracle_computes_every_catalogue_kpi() -> None:
    assert set(reference.kpis({})) == set(cat.KPI_KEYS)


def test_dashboard_looks_cover_every_catalogue_kpi() -> None:
    assert set(provisioning.KPI_LOOKS) == set(cat.KPI_KEYS)


def test_every_default_rule_is_on_the_bad_side_of_its_kpi() -> None:
    for key, rule in DEFAULT_RULES.items():
        assert rule.direction == cat.BY_KEY[key].rule_direction, key


def test_example_thresholds_spell_out_every_default_rule() -> None:
    text = (ROOT / "callpulse" / "thresholds.example.toml").read_text()
    assert load_thresholds(text)["rules"] == DEFAULT_RULES
    assert set(re.findall(r"^\[kpi\.(\w+)\]", text, re.M)) == set(DEFAULT_RULES)


def test_every_kpi_can_have_a_rule() -> None:
    text = "".join(f"[kpi.{key}]\nwarning_below = 1\n" for key in cat.KPI_KEYS)
    assert set(load_thresholds(text)["rules"]) == set(cat.KPI_KEYS)


def test_default_settings_rules_come_from_the_catalogue() -> None:
    assert Settings().rules == DEFAULT_RULES
    assert set(DEFAULT_RULES) == {k.key for k in cat.CATALOGUE if k.default_rule is not None}


def test_ratio_is_none_on_a_zero_denominator_and_counts_are_zero() -> None:
    values = w.kpis_from_sums(w.empty_sums())
    for kpi in cat.CATALOGUE:
        assert (values[kpi.key] is None) == kpi.is_ratio, kpi.key
        if not kpi.is_ratio:
            assert values[kpi.key] == 0


def test_milli_counters_come_back_in_units() -> None:
    sums = w.empty_sums() | {w.REVENUE_MILLI: 1_234_567, w.PRICED_SALES: 2, w.HANDLE_MS: 90_500, w.CONNECTED: 1}
    values = w.kpis_from_sums(sums)
    assert (values["revenue"], values["aov"], values["aht_seconds"]) == (1234.567, 617.2835, 90.5)


def test_qa_score_divides_thousandths_by_thousandths() -> None:
    sums = w.empty_sums() | {w.QA_POINTS_MILLI: 87_500, w.QA_MAX_MILLI: 100_000, w.QA_REVIEWS: 1}
    assert w.kpis_from_sums(sums)["qa_score"] == 0.875


def test_nps_scales_net_promoters_by_100() -> None:
    sums = w.empty_sums() | {w.NPS_NET: -3, w.NPS_RESPONSES: 12}
    assert w.kpis_from_sums(sums)["nps"] == -25.0


def test_complaint_rate_denominator_sums_two_counters() -> None:
    sums = w.empty_sums() | {w.COMPLAINTS: 3, w.CONNECTED: 40, w.CLOSED: 20}
    assert w.kpis_from_sums(sums)["complaint_rate"] == 0.05
    assert w.samples(sums, "complaint_rate") == 60


def test_qa_samples_are_reviews_not_points() -> None:
    sums = w.empty_sums() | {w.QA_POINTS_MILLI: 80_000, w.QA_MAX_MILLI: 100_000, w.QA_REVIEWS: 4}
    assert w.samples(sums, "qa_score") == 4


def test_team_values_come_from_summed_counters() -> None:
    a = w.empty_sums() | {w.NPS_NET: 1, w.NPS_RESPONSES: 1}  # one promoter: +100
    b = w.empty_sums() | {w.NPS_NET: -3, w.NPS_RESPONSES: 9}  # -33.3
    assert w.kpis_from_sums(w.total([a, b]))["nps"] == -20.0


def test_aggregator_initialize_agg_result() -> None:
    kpi = cat.BY_KEY["complaint_rate"]
    state = kpi.initialize()
    kpi.agg(state, {w.COMPLAINTS: 1, w.CONNECTED: 3})
    kpi.agg(state, {w.CLOSED: 1, w.DIALS: 7})
    assert state == {w.COMPLAINTS: 1, w.CONNECTED: 3, w.CLOSED: 1}
    assert kpi.result(state) == 0.25


def test_mixing_thousandths_and_units_in_a_numerator_is_refused() -> None:
    with pytest.raises(ValueError, match="mix counters in thousandths and in units"):
        cat.Kpi("bad", num=("handle_ms", "connected"))


def test_describe_gives_labels_and_formats_for_every_kpi() -> None:
    rows = cat.describe()
    assert [r["key"] for r in rows if r["scope"] == "agent"] == list(cat.KPI_KEYS)
    assert [r["key"] for r in rows if r["scope"] == "queue"] == list(cat.QUEUE_KPI_KEYS)
    assert {r["format"] for r in rows} <= {"duration", "elapsed", "percent", "integer", "money", "number"}
    assert all(r["short"] and r["title"] for r in rows)


def test_kpi_reference_lists_every_catalogue_kpi_once() -> None:
    text = (ROOT / "docs" / "kpis.md").read_text()
    assert text == provisioning.kpi_reference(Settings())  # the example scorecard adds no rule
    rows = re.findall(r"^\| `(\w+)` \|", text, re.M)
    assert rows == list(cat.KPI_KEYS)


def test_readme_does_not_repeat_the_kpi_list() -> None:
    readme = (ROOT / "README.md").read_text()
    assert not [key for key in cat.KPI_KEYS if f"| `{key}` |" in readme]


@pytest.mark.parametrize("name", ["wallboard.js", "index.html"])
def test_the_wallboard_names_no_kpi_of_its_own(name: str) -> None:
    text = (ROOT / "monitor" / "static" / name).read_text()
    assert [key for key in cat.KPI_KEYS if re.search(rf"\b{key}\b", text)] == []


def test_the_wallboard_knows_every_catalogue_format() -> None:
    js = (ROOT / "monitor" / "static" / "wallboard.js").read_text()
    formats = re.search(r"const FORMATS = \{(.*?)\};", js, re.S)
    assert formats is not None
    assert set(re.findall(r"(\w+): \(v\)", formats.group(1))) == set(cat.UNIT_FORMAT.values()) | {"elapsed"}


def test_queue_kpis_come_from_the_queue_catalogue() -> None:
    from streams import queues

    assert tuple(queues.kpis_from_sums({})) == tuple(k.key for k in cat.QUEUE_CATALOGUE)
    assert set(cat.QUEUE_FIELDS).isdisjoint(cat.FIELDS)


def test_campaign_kpis_are_the_agents_outbound_abandonment_over_campaign_buckets() -> None:
    from streams import campaigns

    assert set(cat.CAMPAIGN_FIELDS) <= set(cat.FIELDS)
    assert campaigns.kpis_from_sums({"ob": 3, "c": 97}) == {"outbound_abandon_rate": 0.03}
