"""Verdicts against the baseline: seeds and test windows both count, Holm across variants, and no
verdict with too few seeds or for models not trained enough to judge.

Per-seed forecasts are constructed (targets N(0, 1), forecasts the true quantiles moved by a
shift per seed), so each seed's CRPS and its difference from the baseline are known in advance.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from anyq.reporting.stats import BETTER, NO_DIFFERENCE, WORSE, StoredForecasts, paired_crps_test
from anyq.reporting.study_comparison import group_test
from anyq.reporting.verdict import BASELINE_NOT_TRAINED, NOT_TRAINED, TOO_FEW_SEEDS, holm, seed_window_test, study_verdicts
from anyq.tracking.readiness import readiness_tags, untrained_reasons

LEVELS = np.arange(1, 40) / 40.0
N_SERIES, N_ORIGINS, HORIZON = 3, 60, 24


def forecasts(shift: float, *, noise: float = 0.0, seed: int = 0) -> StoredForecasts:
    """The same targets for every call (one test set); quantiles moved by ``shift`` plus, per
    window, ``noise`` × N(0, 1) (a model that is sometimes off)."""
    rng = np.random.default_rng(0)
    n = N_SERIES * N_ORIGINS
    target = rng.normal(size=(n, HORIZON))
    wobble = np.random.default_rng(100 + seed).normal(size=(n, 1, 1)) * noise
    quantiles = np.broadcast_to(scipy_stats.norm.ppf(LEVELS), (n, HORIZON, LEVELS.size))
    return StoredForecasts(quantiles + shift + wobble, target, np.repeat(np.arange(N_SERIES), N_ORIGINS),
                           np.tile(np.arange(N_ORIGINS) * 24, N_SERIES), LEVELS)


def group(*shifts: float, noise: float = 0.0) -> list[tuple[str, StoredForecasts]]:
    return [(str(s), forecasts(shift, noise=noise, seed=s)) for s, shift in enumerate(shifts)]


def test_seeds_that_disagree_give_no_detectable_difference_though_each_seed_is_clear_cut():
    baseline = group(0.5, 0.5, 0.5)
    variant = group(0.0, 1.1, 0.2)  # seed 0 much better, seed 1 much worse, seed 2 better
    for (_, mine), (_, theirs) in zip(variant, baseline):  # each seed alone: its windows leave no doubt
        assert paired_crps_test(mine, theirs).p_value < 1e-6
    assert [paired_crps_test(m, b).verdict for (_, m), (_, b) in zip(variant, baseline)] == [BETTER, WORSE, BETTER]
    test = group_test(variant, baseline, 0.95)
    assert test.paired_seeds and test.candidate_seeds == test.reference_seeds == 3
    assert test.ci_low < 0.0 < test.ci_high  # the interval holds the seeds' disagreement
    assert test.se_seeds > 5 * test.se_windows
    (verdict,) = study_verdicts({"variant": test}).values()
    assert verdict.verdict == NO_DIFFERENCE and verdict.p_adjusted == test.p_value > 0.05


def test_consistently_better_over_three_seeds_is_better_with_an_interval_below_zero():
    baseline = group(0.5, 0.55, 0.45, noise=0.1)
    variant = group(0.05, 0.0, 0.1, noise=0.1)
    test = group_test(variant, baseline, 0.95)
    assert test.relative_difference < 0 and test.ci_high < 0.0
    (verdict,) = study_verdicts({"variant": test}).values()
    assert verdict.verdict == BETTER and verdict.p_adjusted < 0.05
    worse = study_verdicts({"variant": group_test(baseline, variant, 0.95)})["variant"]
    assert worse.verdict == WORSE and worse.test.ci_low > 0.0


def test_two_seeds_give_an_interval_and_no_p_value():
    test = group_test(group(0.0, 0.05), group(0.5, 0.5), 0.95)
    assert math.isnan(test.p_value) and not test.enough_seeds
    assert test.ci_low < test.relative_difference < test.ci_high and test.df == 1  # t with 1 degree of freedom
    verdict = study_verdicts({"variant": test})["variant"]
    assert verdict.verdict == TOO_FEW_SEEDS == "too few seeds for a verdict" and math.isnan(verdict.p_adjusted)
    assert "2 seeds" in verdict.reason


def test_seed_and_window_parts_by_hand():
    # seeds only: every origin alike, per-seed relative differences -0.1, 0, -0.2
    reference = np.full((3, 10), 10.0)
    candidate = np.array([[9.0] * 10, [10.0] * 10, [8.0] * 10])
    test = seed_window_test(candidate, reference, paired=True)
    se = math.sqrt(np.var([-0.1, 0.0, -0.2], ddof=1) / 3)
    assert test.relative_difference == pytest.approx(-0.1) and test.se_windows == 0.0
    assert test.se_seeds == pytest.approx(se)
    assert test.p_value == pytest.approx(2 * scipy_stats.t.sf(0.1 / se, 2))
    assert test.ci_high == pytest.approx(-0.1 + scipy_stats.t.ppf(0.975, 2) * se)
    # windows only: identical seeds; with no lags the window part is the plain standard error of
    # the linearised per-origin differences z_t = (c_t - (1 + theta) r_t) / R
    rng = np.random.default_rng(5)
    r_row, c_row = 10 + rng.normal(size=40), 9.5 + rng.normal(size=40)
    test = seed_window_test(np.tile(c_row, (3, 1)), np.tile(r_row, (3, 1)), paired=True, maxlags=0)
    theta = c_row.mean() / r_row.mean() - 1
    z = (c_row - (1 + theta) * r_row) / r_row.mean()
    assert test.relative_difference == pytest.approx(theta) and test.se_seeds == pytest.approx(0.0, abs=1e-12)
    assert test.se_windows == pytest.approx(z.std(ddof=1) / math.sqrt(40))


def test_holm_adjusted_p_values_by_hand():
    # sorted 0.01 < 0.03 < 0.04: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    base = seed_window_test(np.full((3, 5), 9.0), np.full((3, 5), 10.0), paired=True)
    tests = {name: dataclasses.replace(base, p_value=p) for name, p in {"a": 0.01, "b": 0.04, "c": 0.03}.items()}
    verdicts = study_verdicts(tests, alpha=0.05)
    assert {k: v.verdict for k, v in verdicts.items()} == {"a": BETTER, "b": NO_DIFFERENCE, "c": NO_DIFFERENCE}
    assert verdicts["b"].p_adjusted == pytest.approx(0.06)  # below alpha before the correction, not after
    # a variant without a p-value (too few seeds) takes no part in the correction
    tests["d"] = dataclasses.replace(base, p_value=math.nan, candidate_seeds=2)
    assert study_verdicts(tests)["a"].p_adjusted == pytest.approx(0.03)


def test_a_run_not_trained_enough_is_flagged_and_gets_no_verdict():
    assert untrained_reasons({"test/coverage-0.9": 0.9, "test/oracle_ratio": 1.2, "test/naive_ratio": 0.8}) == []
    assert readiness_tags({"test/coverage-0.9": 0.9}) == {"trained_enough": "true"}
    reasons = untrained_reasons({"test/coverage-0.9": 0.0, "test/oracle_ratio": 25.0, "test/naive_ratio": 1.0031})
    assert reasons == ["test/coverage-0.9 0.000 outside [0.5, 0.99]", "test/oracle_ratio 25.000 above 2",
                       "test/naive_ratio 1.003: CRPS above seasonal naive's on the same windows"]  # not "1"
    tags = readiness_tags({"test/coverage-0.9": 0.995})
    assert tags["trained_enough"] == "false" and "0.995 outside" in tags["trained_enough_reason"]
    clear = group_test(group(0.0, 0.05, 0.1), group(0.5, 0.5, 0.5), 0.95)  # "better" if it were judged
    others = {"other": group_test(group(0.0, 0.0, 0.05), group(0.5, 0.5, 0.5), 0.95)}
    verdicts = study_verdicts({"variant": clear, **others}, not_trained={"variant": "seed 0: coverage-0.9 0.000"})
    assert verdicts["variant"].verdict == NOT_TRAINED and math.isnan(verdicts["variant"].p_adjusted)
    assert "coverage-0.9" in verdicts["variant"].reason
    assert verdicts["other"].verdict == BETTER and verdicts["other"].p_adjusted == others["other"].p_value
    # an untrained baseline: no verdict for anyone
    verdicts = study_verdicts({"variant": clear, **others}, baseline_reason="seed 1: oracle ratio 31 above 2")
    assert {v.verdict for v in verdicts.values()} == {BASELINE_NOT_TRAINED}  # whose training: the baseline's
    assert {v.reason for v in verdicts.values()} == {"the baseline is not trained enough to judge: seed 1: "
                                                     "oracle ratio 31 above 2"}
    # both untrained: the candidate's own label, both reasons
    verdicts = study_verdicts({"variant": clear, **others}, not_trained={"variant": "seed 0: coverage-0.9 0.000"},
                              baseline_reason="seed 1: oracle ratio 31 above 2")
    assert verdicts["variant"].verdict == NOT_TRAINED and verdicts["other"].verdict == BASELINE_NOT_TRAINED
    assert verdicts["variant"].reason == ("seed 0: coverage-0.9 0.000; the baseline is not trained enough to "
                                          "judge: seed 1: oracle ratio 31 above 2")


def test_the_seed_standard_error_of_one_seed_a_side_is_shown_as_unknown_not_zero():
    import types

    import pandas as pd

    from anyq.reporting.html import paired_frame

    rows = {}
    for group, seeds in (("one", 1), ("three", 3)):
        rows[group] = {"relative_difference": -0.01, "ci_low": -0.03, "ci_high": 0.01, "mean_difference": -1.0,
                       "candidate_crps": 99.0, "reference_crps": 100.0, "p_value": math.nan, "p_adjusted": math.nan,
                       "verdict": TOO_FEW_SEEDS, "reason": "", "candidate_seeds": seeds, "reference_seeds": seeds,
                       "paired_seeds": True, "n_origins": 30, "se_seeds": 0.0 if seeds == 1 else 0.004,
                       "se_windows": 0.002, "per_seed": ""}
    frame = paired_frame(types.SimpleNamespace(paired=pd.DataFrame.from_dict(rows, orient="index"), confidence=0.95))
    assert frame["SE from seeds / from windows (% points)"].to_dict() == {"one": "– / 0.200", "three": "0.400 / 0.200"}
