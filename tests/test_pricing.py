"""Prices come from one dated table; batch is exactly half of sync; reports never crash on a model."""

from __future__ import annotations

import ast
import dataclasses
import json
import pickle
from datetime import date
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_claude_batch import pricing
from airflow_provider_claude_batch.pricing import (
    BATCH_DISCOUNT,
    PRICES,
    PRICES_AS_OF,
    PRICES_SOURCE,
    CostReport,
    ModelPrice,
    TokenUsage,
    UnknownModelError,
    cost_of,
    known_models,
    monthly_cost,
    price_for,
)

MILLION = 1_000_000


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def test_prices_are_dated_and_sourced() -> None:
    assert isinstance(PRICES_AS_OF, date)
    assert PRICES_SOURCE == "https://platform.claude.com/docs/en/about-claude/pricing"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-sonnet-4-6", ("3", "15", "3.75", "6", "0.30")),
        ("claude-opus-4-8", ("5", "25", "6.25", "10", "0.50")),
        ("claude-opus-4-1", ("15", "75", "18.75", "30", "1.50")),
        ("claude-haiku-4-5", ("1", "5", "1.25", "2", "0.10")),
        ("claude-opus-5-5", ("4", "20", "5", "8", "0.20")),
        ("claude-sonnet-5-5", ("2", "10", "2.50", "4", "0.20")),
        ("claude-mythos-5-1", ("10", "50", "12.50", "20", "0.25")),
    ],
)
def test_standard_prices_match_the_reference_tables(model: str, expected: tuple[str, ...]) -> None:
    price = price_for(model)

    assert price.model == model
    assert (price.input, price.output, price.cache_write_5m, price.cache_write_1h, price.cache_read) == tuple(
        Decimal(amount) for amount in expected
    )


def test_every_price_is_a_decimal() -> None:
    for price in PRICES.values():
        for field in dataclasses.fields(price):
            if field.name != "model":
                assert isinstance(getattr(price, field.name), Decimal)


def test_haiku_5_5_has_no_firm_price_and_says_why() -> None:
    assert "claude-haiku-5-5" not in PRICES

    with pytest.raises(UnknownModelError, match="no firm price"):
        price_for("claude-haiku-5-5")


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        PRICES["claude-new"] = PRICES["claude-sonnet-4-6"]  # type: ignore[index]


def test_model_price_rejects_float_and_negative_prices() -> None:
    with pytest.raises(TypeError, match="input must be a Decimal"):
        ModelPrice("m", 3.0, Decimal(15), Decimal(1), Decimal(1), Decimal(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output must be a non-negative"):
        ModelPrice("m", Decimal(3), Decimal(-1), Decimal(1), Decimal(1), Decimal(1))


# --------------------------------------------------------------------------------------------------
# Model id resolution
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "canonical"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4-0"),
        ("claude-sonnet-4-6-20260101", "claude-sonnet-4-6"),  # a snapshot not listed in the table
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Google Cloud Vertex AI spelling
        ("  claude-sonnet-4-6 ", "claude-sonnet-4-6"),
    ],
)
def test_dated_ids_and_aliases_resolve(model: str, canonical: str) -> None:
    assert price_for(model).model == canonical


def test_unknown_model_names_it_and_lists_known_ids() -> None:
    with pytest.raises(UnknownModelError) as caught:
        price_for("claude-imaginary-9")

    message = str(caught.value)
    assert "'claude-imaginary-9'" in message
    assert "claude-sonnet-4-6" in message
    assert "claude-haiku-4-5" in message
    assert caught.value.model == "claude-imaginary-9"
    assert caught.value.known_models == known_models()


def test_unknown_model_error_is_a_value_error_and_survives_pickling() -> None:
    error = UnknownModelError("claude-imaginary-9")

    assert isinstance(error, ValueError)
    restored = pickle.loads(pickle.dumps(error))
    assert restored.model == "claude-imaginary-9"
    assert str(restored) == str(error)


def test_price_for_rejects_non_strings() -> None:
    with pytest.raises(TypeError, match="model id string"):
        price_for(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Batch is half of sync
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(PRICES))
def test_batch_is_exactly_half_of_sync_for_every_model(model: str) -> None:
    usage = TokenUsage(
        input_tokens=123_457,
        output_tokens=98_765,
        cache_creation_input_tokens=4_321,
        cache_read_input_tokens=555_555,
    )
    standard = price_for(model)
    batch = standard.at_batch_rate()

    for field in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read"):
        assert getattr(batch, field) * 2 == getattr(standard, field)
    for ttl in ("5m", "1h"):
        report = cost_of({model: usage}, cache_write_ttl=ttl)  # type: ignore[arg-type]
        assert report.batch_usd * 2 == report.sync_usd
        assert report.saving_usd == report.batch_usd


def test_batch_discount_is_fifty_percent() -> None:
    assert Decimal("0.5") == BATCH_DISCOUNT


# --------------------------------------------------------------------------------------------------
# cost_of
# --------------------------------------------------------------------------------------------------


def test_sonnet_4_6_one_million_in_and_out() -> None:
    report = cost_of({"claude-sonnet-4-6": TokenUsage(input_tokens=MILLION, output_tokens=MILLION)})

    assert report.sync_usd == Decimal("18.00")
    assert report.batch_usd == Decimal("9.00")
    assert report.saving_usd == Decimal("9.00")
    assert report.prices_as_of == PRICES_AS_OF
    assert report.unpriced_models == ()


def test_opus_4_8_and_haiku_4_5_figures() -> None:
    opus = cost_of({"claude-opus-4-8": TokenUsage(input_tokens=2 * MILLION, output_tokens=MILLION // 2)})
    haiku = cost_of({"claude-haiku-4-5": TokenUsage(input_tokens=10_000, output_tokens=2_000)})

    assert opus.sync_usd == Decimal("22.50")  # 2 x 5 + 0.5 x 25
    assert opus.batch_usd == Decimal("11.25")
    assert haiku.sync_usd == Decimal("0.02")  # 0.01 x 1 + 0.002 x 5
    assert haiku.batch_usd == Decimal("0.01")


def test_cache_tokens_are_priced_separately_at_the_5_minute_write_rate_by_default() -> None:
    usage = TokenUsage(cache_creation_input_tokens=MILLION, cache_read_input_tokens=MILLION)

    report = cost_of({"claude-sonnet-4-6": usage})

    assert report.sync_usd == Decimal("4.05")  # 3.75 write (5m) + 0.30 read
    assert report.batch_usd == Decimal("2.025")


def test_cache_writes_can_be_priced_at_the_1_hour_rate() -> None:
    usage = TokenUsage(cache_creation_input_tokens=MILLION, cache_read_input_tokens=MILLION)

    report = cost_of({"claude-sonnet-4-6": usage}, cache_write_ttl="1h")

    assert report.sync_usd == Decimal("6.30")  # 6 write (1h) + 0.30 read
    assert report.batch_usd == Decimal("3.15")


def test_bad_cache_write_ttl_is_rejected() -> None:
    with pytest.raises(ValueError, match="cache_write_ttl must be '5m' or '1h'"):
        cost_of({}, cache_write_ttl="1d")  # type: ignore[arg-type]


def test_several_models_add_up() -> None:
    report = cost_of(
        {
            "claude-sonnet-4-6": TokenUsage(input_tokens=MILLION),  # 3
            "claude-haiku-4-5-20251001": TokenUsage(output_tokens=MILLION),  # 5
        }
    )

    assert report.sync_usd == Decimal("8")
    assert report.batch_usd == Decimal("4")


def test_unknown_models_are_listed_not_crashed_on() -> None:
    report = cost_of(
        {
            "claude-sonnet-4-6": TokenUsage(input_tokens=MILLION),
            "claude-imaginary-9": TokenUsage(input_tokens=MILLION),
            "claude-haiku-5-5": TokenUsage(input_tokens=MILLION),
        }
    )

    assert report.sync_usd == Decimal("3")
    assert report.unpriced_models == ("claude-haiku-5-5", "claude-imaginary-9")


def test_empty_usage_costs_nothing() -> None:
    report = cost_of({})

    assert (report.batch_usd, report.sync_usd, report.saving_usd) == (0, 0, 0)


def test_cost_of_rejects_raw_dicts() -> None:
    with pytest.raises(TypeError, match=r"must be a TokenUsage \(see TokenUsage.from_api\)"):
        cost_of({"claude-sonnet-4-6": {"input_tokens": 5}})  # type: ignore[dict-item]


def test_report_as_dict_is_json_safe_and_rounded() -> None:
    report = cost_of({"claude-haiku-4-5": TokenUsage(input_tokens=1, output_tokens=1, cache_read_input_tokens=7)})

    as_dict = report.as_dict()

    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict == {
        "batch_usd": 0.000003,  # (1 + 5 + 0.7) / 1M / 2 = 0.00000335
        "sync_usd": 0.000007,  # 0.0000067
        "saving_usd": 0.000003,
        # 7 reads at 0.10 instead of 1.00 per million: 0.0000063 saved on sync, half on batch
        "cache_saving_batch_usd": 0.000003,
        "cache_saving_sync_usd": 0.000006,
        "prices_as_of": PRICES_AS_OF.isoformat(),
        "prices_source": PRICES_SOURCE,
        "unpriced_models": [],
    }


def test_report_is_frozen() -> None:
    report = cost_of({})

    assert isinstance(report, CostReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.sync_usd = Decimal(1)  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# monthly_cost
# --------------------------------------------------------------------------------------------------


def test_monthly_cost_scales_one_run() -> None:
    per_run = {"claude-sonnet-4-6": TokenUsage(input_tokens=MILLION, output_tokens=MILLION)}

    report = monthly_cost(per_run, runs_per_month=30)

    assert report.sync_usd == Decimal("540")
    assert report.batch_usd == Decimal("270")
    assert report.saving_usd == Decimal("270")


def test_monthly_cost_scales_by_a_fractional_run_count_exactly() -> None:
    per_run = {"claude-haiku-4-5": TokenUsage(input_tokens=MILLION)}

    report = monthly_cost(per_run, runs_per_month=4.35)  # weekly

    assert report.sync_usd == Decimal("4.35")
    assert report.batch_usd == Decimal("2.175")


def test_monthly_cost_keeps_unpriced_models() -> None:
    report = monthly_cost({"claude-imaginary-9": TokenUsage(input_tokens=1)}, runs_per_month=30)

    assert report.unpriced_models == ("claude-imaginary-9",)
    assert report.sync_usd == 0


@pytest.mark.parametrize(
    ("runs", "error"),
    [
        (-1, ValueError),
        (float("inf"), ValueError),
        (float("nan"), ValueError),
        ("30", TypeError),
        (True, TypeError),
    ],
)
def test_monthly_cost_rejects_bad_run_counts(runs: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="runs_per_month"):
        monthly_cost({}, runs_per_month=runs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# TokenUsage
# --------------------------------------------------------------------------------------------------


def test_usages_add_up() -> None:
    first = TokenUsage(input_tokens=1, output_tokens=2, cache_creation_input_tokens=3, cache_read_input_tokens=4)
    second = TokenUsage(input_tokens=10, output_tokens=20, cache_creation_input_tokens=30, cache_read_input_tokens=40)

    assert first + second == TokenUsage(11, 22, 33, 44)
    assert sum([first, second, first]) == TokenUsage(12, 24, 36, 48)
    assert sum([], TokenUsage()) == TokenUsage()


def test_adding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        TokenUsage() + 5  # type: ignore[operator]


def test_as_dict_uses_the_api_field_names() -> None:
    assert TokenUsage(1, 2, 3, 4).as_dict() == {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 4,
        "cache_creation_1h_input_tokens": 0,
    }


def test_from_api_treats_null_and_missing_cache_fields_as_zero() -> None:
    usage = TokenUsage.from_api(
        {
            "input_tokens": 11,
            "output_tokens": 36,
            "cache_creation_input_tokens": None,
            "service_tier": "batch",
            "server_tool_use": None,
        }
    )

    assert usage == TokenUsage(input_tokens=11, output_tokens=36)


def test_from_api_accepts_none_and_sdk_like_objects() -> None:
    sdk_usage = SimpleNamespace(
        input_tokens=5, output_tokens=7, cache_creation_input_tokens=None, cache_read_input_tokens=100
    )

    assert TokenUsage.from_api(None) == TokenUsage()
    assert TokenUsage.from_api({}) == TokenUsage()
    assert TokenUsage.from_api(sdk_usage) == TokenUsage(5, 7, 0, 100)


def test_from_api_round_trips_as_dict() -> None:
    usage = TokenUsage(1, 2, 3, 4, 2)

    assert TokenUsage.from_api(usage.as_dict()) == usage


def test_from_api_reads_the_one_hour_share_of_cache_writes_from_the_breakdown() -> None:
    api = {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    }
    sdk = SimpleNamespace(**{**api, "cache_creation": SimpleNamespace(**api["cache_creation"])})

    assert TokenUsage.from_api(api) == TokenUsage.from_api(sdk) == TokenUsage(5, 7, 300, 0, 200)
    assert TokenUsage.from_api({**api, "cache_creation": None}).cache_creation_1h_input_tokens == 0


def test_one_hour_writes_cannot_exceed_the_writes() -> None:
    with pytest.raises(ValueError, match="part of cache_creation_input_tokens"):
        TokenUsage(cache_creation_input_tokens=1, cache_creation_1h_input_tokens=2)


def test_one_hour_writes_are_priced_as_such_and_the_rest_at_five_minutes() -> None:
    # Sonnet 4.6: 3.75 per million for a 5-minute write, 6 for a 1-hour one.
    usage = TokenUsage(cache_creation_input_tokens=3 * MILLION, cache_creation_1h_input_tokens=2 * MILLION)

    report = cost_of({"claude-sonnet-4-6": usage})

    assert report.sync_usd == Decimal("3.75") + 2 * Decimal(6)
    assert report.batch_usd == report.sync_usd / 2


def test_what_the_cache_saved_is_its_tokens_at_the_input_price_less_what_they_cost() -> None:
    # Sonnet 4.6 at batch prices: input 1.50, 1-hour write 3.00, read 0.15 per million.
    read_often = TokenUsage(
        cache_creation_input_tokens=MILLION, cache_creation_1h_input_tokens=MILLION, cache_read_input_tokens=9 * MILLION
    )
    report = cost_of({"claude-sonnet-4-6": read_often})
    assert report.cache_saving_batch_usd == 10 * Decimal("1.5") - Decimal(3) - 9 * Decimal("0.15")
    assert report.cache_saving_on("sync") == 2 * report.cache_saving_on("batch")

    written_only = TokenUsage(cache_creation_input_tokens=MILLION, cache_creation_1h_input_tokens=MILLION)
    assert cost_of({"claude-sonnet-4-6": written_only}).cache_saving_batch_usd == Decimal("-1.5")  # it cost more


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"input_tokens": -1}, ValueError),
        ({"output_tokens": 1.5}, TypeError),
        ({"cache_read_input_tokens": "10"}, TypeError),
        ({"cache_creation_input_tokens": True}, TypeError),
    ],
)
def test_token_counts_are_validated(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(kwargs))):
        TokenUsage(**kwargs)  # type: ignore[arg-type]


def test_module_imports_nothing_from_airflow() -> None:
    # Pure logic: importable and testable without an Airflow installation or configuration.
    tree = ast.parse(Path(pricing.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert not {name for name in imported if name == "airflow" or name.startswith("airflow.")}
