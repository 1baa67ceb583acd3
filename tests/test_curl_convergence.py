"""Convergence speed (paper Fig. 5, 10): the convergence epoch never counts a run that did not
converge as converging at the end, the paired comparison agrees with scipy and says when it
cannot decide, and at reduced size curl descent is faster where the paper says so."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from syngeo.engine.curl.convergence import compare, convergence_epoch
from syngeo.kinds import get_kind
from syngeo.runner import run_local


def test_the_convergence_epoch_is_the_first_below_and_none_for_never() -> None:
    epochs = np.array([0, 1, 2, 5, 10, 20])
    curves = np.array([[1.0, 0.1, 5e-4, 1e-5, 1e-6, 1e-7],     # below 1e-3 from epoch 2
                       [1.0, 0.5, 0.2, 0.1, 0.05, 0.02],      # never
                       [1.0, 0.5, 0.2, 0.1, 0.05, 1e-4],      # only at the last epoch
                       [1.0, np.nan, np.nan, np.nan, np.nan, np.nan]])  # overflowed
    got = convergence_epoch(curves, epochs, -3.0)
    expected = []
    for curve in curves:                                     # a plain loop
        hits = [e for e, v in zip(epochs, curve, strict=True) if v > 0 and np.log10(v) < -3]
        expected.append(hits[0] if hits else np.nan)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[1]) and got[2] == 20                  # never ≠ the last epoch
    with pytest.raises(ValueError, match="recorded points"):
        convergence_epoch(curves, epochs[:-1], -3.0)


def test_the_paired_comparison_agrees_with_scipy() -> None:
    rng = np.random.default_rng(3)
    gradient = rng.uniform(500, 900, 12)
    curl = gradient - rng.uniform(50, 150, 12)
    curl[3], gradient[7] = np.nan, np.nan                     # one never converged each
    result = compare(curl, gradient, never=1001)
    both = np.isfinite(curl) & np.isfinite(gradient)
    reference = stats.ttest_rel(curl[both], gradient[both])
    assert result.pairs == 10 and result.curl_never == 1 and result.gradient_never == 1
    assert result.p == pytest.approx(reference.pvalue) and result.t == pytest.approx(
        reference.statistic)
    assert result.curl_mean == pytest.approx(np.nanmean(curl))
    assert result.curl_sem == pytest.approx(stats.sem(curl[np.isfinite(curl)]))
    assert result.mean_difference < 0 and result.p < 0.01
    # Fewer than two pairs: no test, said as such.
    lonely = compare(np.array([1.0, np.nan, np.nan]), np.array([2.0, 3.0, np.nan]), never=9)
    assert lonely.pairs == 1 and lonely.p is None                # no t-test on one pair
    same = compare(np.array([5.0, 7.0]), np.array([5.0, 7.0]), never=9)
    assert same.p == 1.0 and same.t == 0.0 and not same.decided  # no order: no rank test
    with pytest.raises(ValueError, match="after every"):
        compare(np.array([5.0, 7.0]), np.array([5.0, 9.0]), never=9)


def test_the_rank_test_counts_runs_that_never_converged() -> None:
    """Curl converges in 10 of 12 seeds, gradient descent in 2: the t-test sees two pairs,
    the signed-rank test every seed with an order, a never-converged run just after the
    last epoch (against scipy on the differences written out by hand)."""
    curl = np.array([100.0, 120, 90, 300, 150, 80, 110, 95, 130, 140, np.nan, np.nan])
    gradient = np.array([400.0, 80] + [np.nan] * 10)
    result = compare(curl, gradient, never=1001)
    differences = [100 - 400, 120 - 80] + [c - 1001 for c in curl[2:10]]   # two ties left out
    assert (result.curl_first, result.gradient_first) == (9, 1)
    assert result.rank_p == pytest.approx(stats.wilcoxon(differences).pvalue)
    assert result.pairs == 2 and result.rank_p < 0.05 and result.curl_faster


def test_the_direction_is_the_rank_sums_not_the_count_of_wins() -> None:
    """Curl wins four seeds by a little, gradient descent two by a lot: the rank sums favour
    gradient descent (ranks of |Δ| written out by hand)."""
    curl = np.array([99.0, 98, 97, 96, 900, 950])
    gradient = np.array([100.0, 100, 100, 100, 100, 100])
    result = compare(curl, gradient, never=1001)
    assert (result.curl_first, result.gradient_first) == (4, 2)
    # |Δ| = 1, 2, 3, 4, 800, 850 → ranks 1–4 to curl, 5 and 6 to gradient descent
    assert (result.curl_rank_sum, result.gradient_rank_sum) == (10.0, 11.0)
    assert result.curl_faster is False


def test_curl_descent_converges_faster_at_reduced_size() -> None:
    """Fig. 5c at reduced size: tanh, M = 100, N = 10, one flipped readout neuron, student
    scale 2; N_train = 500 (the paper: faster for N_train ≥ 500, p < 0.01)."""
    spec = {"sweep": "n_train", "values": [500, 1000], "epochs": 3000, "seeds": 12,
            "threshold": -1.0, "record_points": 60, "seed": 1}
    _, result = run_local("curl_convergence", spec, device="cpu")
    small, large = result.summary["points"]
    for point in (small, large):
        assert point["verdict"] == "curl faster", point
        assert point["rank_p"] < 0.05 and point["curl_mean"] < point["gradient_mean"]
    # At N_train = 500 gradient descent mostly never gets there: the t-test on the few
    # complete pairs cannot tell, the signed-rank test over every seed can.
    assert small["gradient_never"] > small["curl_never"]
    assert large["p"] < 0.05 and large["pairs"] >= 10
    assert result.summary["conclusion"].startswith(
        "In tanh networks, curl descent reached a test error of 0.100 faster than gradient "
        "descent at 2 of 2 values of the training-set size N_train")
    epochs = result.arrays["convergence_epoch"]
    assert epochs.shape == (2, 2, 12)
    figures = get_kind("curl_convergence").figures(result.summary, result.arrays)
    json.dumps(figures, allow_nan=False)
    # Each rule's line is its mean epoch over the seeds that converged (NaN: never), at each
    # N_train, and both points carry the significance star.
    lines = {t["name"]: t for t in figures["convergence"]["data"]}
    for name, rule in (("gradient descent", 0), ("curl descent", 1)):
        assert lines[name]["x"] == [500, 1000]
        assert lines[name]["y"] == pytest.approx(np.nanmean(epochs[:, rule], axis=-1).tolist())
        assert [p[f"{name.split()[0]}_never"] for p in (small, large)] == \
            np.isnan(epochs[:, rule]).sum(axis=-1).tolist()
    stars = next(t for t in figures["convergence"]["data"] if t["mode"] == "text")
    assert stars["x"] == [500, 1000] and stars["text"] == ["*", "*"]
    # The curves: a band and a mean per rule for each N_train, one N_train shown at a time.
    curves = figures["test_error"]["data"]
    assert len(curves) == 2 * 2 * 2 and sum(t["visible"] is True for t in curves) == 4


@pytest.mark.parametrize(("spec", "field"), [
    ({"sweep": "n_train", "values": [10.5]}, "values"),
    ({"sweep": "alpha_readout", "values": [0.0]}, "values"),
    ({"threshold": 5.0}, "threshold"),
    ({"threshold": -20.0}, "no run can reach"),
    ({"threshold": -31.0, "dtype": "float64"}, "threshold"),
    ({"seeds": 1}, "seeds"),
    ({"c": 1000.0}, "c"),
])
def test_bad_specs_are_refused_naming_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        get_kind("curl_convergence").Spec.model_validate(spec)
    assert field in str(err.value)


def test_the_sweep_in_chunks_equals_the_sweep_in_one_piece(monkeypatch) -> None:
    """Any number of workers gives the same result: pieces are (value, seed), their draws
    derive from the run's seed and the seed's position only. The α_r sweep keys each
    value's flips by its position."""
    from syngeo.settings import get_settings

    spec = {"sweep": "alpha_readout", "values": [0.1, 0.3], "n_train": 200, "epochs": 200,
            "seeds": 3, "threshold": -0.5, "record_points": 20, "seed": 2}
    kind = get_kind("curl_convergence")
    results = []
    for seconds, chunks in (("1e9", 1), ("0", 6)):
        monkeypatch.setenv("SYNGEO_CHUNK_SECONDS", seconds)
        get_settings.cache_clear()
        assert len(kind.chunks(kind.Spec.model_validate(spec))) == chunks
        results.append(run_local("curl_convergence", spec, device="cpu")[1])
    get_settings.cache_clear()
    whole, split = results
    for name, value in whole.arrays.items():
        assert np.array_equal(value, split.arrays[name], equal_nan=True), name
    # the gradient runs (α_r = 0) are the same students at both values; the curl runs differ
    test = whole.arrays["test_error"]
    np.testing.assert_array_equal(test[0, 0], test[1, 0])
    assert not np.array_equal(test[0, 1], test[1, 1])


def test_the_paired_tests_keep_their_false_positive_rate() -> None:
    """Under the null (both rules' epochs exchangeable within a seed, with runs past the last
    epoch censored as never converging), the signed-rank test that decides the verdict and
    the t-test each reject at no more than their 5% level; with curl 30% faster they mostly
    reject, in curl's favour. 2,000 sweeps points of 10 seeds, as the kind's default."""
    rng = np.random.default_rng(11)
    last = 5000.0

    def point(speed_up: float) -> tuple[bool, bool, bool]:
        difficulty = rng.lognormal(7.0, 0.5, 10)                 # per seed, shared
        gradient = difficulty * rng.lognormal(0.0, 0.4, 10)
        curl = difficulty * rng.lognormal(0.0, 0.4, 10) * (1 - speed_up)
        gradient[gradient > last], curl[curl > last] = np.nan, np.nan
        result = compare(curl, gradient, never=last + 1)
        return (result.decided and result.rank_p < 0.05,
                result.p is not None and result.p < 0.05,
                bool(result.curl_faster))

    null = np.array([point(0.0) for _ in range(2000)])
    rank_rate, t_rate = null[:, 0].mean(), null[:, 1].mean()
    se = np.sqrt(0.05 * 0.95 / 2000)
    assert rank_rate < 0.05 + 3 * se and t_rate < 0.05 + 3 * se, (rank_rate, t_rate)
    faster = np.array([point(0.5) for _ in range(500)])
    assert faster[:, 0].mean() > 0.6 and (faster[faster[:, 0], 2]).all()
