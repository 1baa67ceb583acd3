"""Every kind's one-sentence conclusion, on a result that passes and on one that fails or
cannot decide. The results are real: small runs of the kinds themselves (through
``run_local``, which stores the conclusion in the summary as a finished run does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from syngeo.formatting import format_number, format_pm
from syngeo.kinds import KINDS, get_kind
from syngeo.runner import run_local
from tests.test_api import csv_bytes, ne_pairs


def conclude(kind: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    _, result = run_local(kind, spec, device="cpu")
    summary = result.summary
    assert summary["conclusion"] == get_kind(kind).conclusion(summary)
    assert "\n" not in summary["conclusion"] and summary["conclusion"].endswith(".")
    return summary["conclusion"], summary


def test_every_kind_states_a_conclusion() -> None:
    assert all("conclusion" in type(kind).__dict__ for kind in KINDS.values())
    assert set(KINDS) == {"geometry", "linear_regression", "robustness", "finetuning",
                          "spine_fit", "power", "curl_phase_diagram",
                          "curl_order_parameter",
                          "curl_stability", "curl_spectrum", "curl_two_neuron",
                          "curl_single_run",
                          "curl_convergence", "spectra_representation",
                          "spectra_layers", "spectra_ssl",
                          "spectra_geometry"}  # a new kind needs its tests here


# --- geometry: the verdict's headline ---------------------------------------------------------

def test_geometry_conclusion_is_the_verdict(tmp_path: Path) -> None:
    fits = tmp_path / "ne.csv"
    fits.write_bytes(csv_bytes(*ne_pairs(3000)))
    text, summary = conclude("geometry", {"dataset": [str(fits)], "potentials": ["ne", "p2"],
                                          "bootstrap": 0, "seed": 0})
    assert text == summary["headline"] == summary["verdict"]["text"]
    assert text.startswith("Negative entropy (multiplicative updates) fits")
    assert "every other candidate is ruled out" in text

    # A heavy-tailed change: no potential makes it Gaussian, and the sentence says so.
    rng = np.random.default_rng(0)
    before = rng.standard_normal(3000)
    heavy = tmp_path / "cauchy.csv"
    heavy.write_bytes(csv_bytes(before, before + 0.1 * rng.standard_cauchy(3000)))
    text, _ = conclude("geometry", {"dataset": [str(heavy)], "potentials": ["ne", "p2"],
                                    "bootstrap": 0, "seed": 0})
    assert text.startswith("No candidate fits")
    assert "cannot be decided" in text


# --- linear_regression: the §4.1 checks, failed ones by name ------------------------------

GRID = dict(c_values=[2.0], n_exponents=[0.5], d_min=100, d_max=400, n_widths=2, seeds=3,
            seed=0, solver="exact")


def test_linear_regression_conclusion_names_failed_checks() -> None:
    text, summary = conclude("linear_regression", {**GRID, "potentials": ["ne"]})
    assert summary["all_checks_pass"]
    assert text.startswith("All checks pass for 1 setting (D = 100–400, 3 seeds)")

    text, summary = conclude("linear_regression", {**GRID, "potentials": ["ne", "p2"]})
    assert not summary["all_checks_pass"]
    p2 = summary["groups"][1]
    assert p2["potential"]["key"] == "p2" and not p2["checks"]["dphi_small_at_largest"]
    assert text.startswith("Not all checks pass (D = 100–400, 3 seeds): ")
    dphi = format_number(p2["dphi"]["median"][-1])
    assert f"'median Δφ ≤ 0.2 at the largest width' fails for p = 2 ({dphi})" in text
    # Checks that pass everywhere are not listed as failing; NE passes them all.
    assert "ΔCDF ≤ 0.2" not in text and "negative entropy" not in text


# --- power: the smallest n with 80% power, or that none of the tried n reach it -----------

POWER = {"true_potential": "p2", "candidates": ["ne", "p2"], "start": "gaussian",
         "noise_levels": [0.0], "replicates": 20, "seed": 1}


def test_power_conclusion() -> None:
    text, summary = conclude("power", {**POWER, "n_values": [20, 200]})
    n = summary["smallest_n_for_80_percent"]["potential"][0]
    assert n in (20, 200)
    assert f"without noise, n = {n} to single out p = 2" in text

    text, summary = conclude("power", {**POWER, "n_values": [10, 12]})
    assert summary["smallest_n_for_80_percent"]["potential"] == [None]
    assert "more than n = 12 to single out p = 2" in text


# --- robustness: does the most Gaussian hypothesis fall on (or next to) the true one ------

def test_robustness_conclusion() -> None:
    text, summary = conclude("robustness", {"seed": 0, "seeds": 3, "starts": ["gaussian"]})
    total = len(summary["best"])
    assert text.startswith("The lowest mean ΔCDF (over 3 seeds) falls on the true potential in ")
    assert f"of {total} settings" in text
    assert text.endswith("only potentials close to the true one give a Gaussian change.")

    # The true potential and its neighbours are not among the hypotheses: the lowest ΔCDF
    # falls far from it, and the setting is named.
    text, _ = conclude("robustness", {"seed": 0, "seeds": 3, "starts": ["gaussian"],
                                      "true_potentials": ["p3"], "hypothesised": ["ne", "p1.5"]})
    assert "falls on the true potential in 0 of 1 settings" in text
    assert "falls elsewhere in 1 (p = 3 from a Gaussian start gave p = 1.5)" in text
    assert "only potentials close" not in text


# --- spine_fit: the best model by BIC in words, and parameters that are not identified -----

def test_spine_fit_conclusion() -> None:
    text, summary = conclude("spine_fit", {"dataset": "example", "potentials": ["ne", "p2"],
                                           "init_models": ["point_masses"], "seed": 0})
    gap = summary["fits"][1]["bic"] - summary["fits"][0]["bic"]
    assert summary["best"]["key"] == "ne/point_masses" and gap > 100
    assert text.startswith("Negative entropy with 2 point masses fits best by BIC, ahead of "
                           f"p = 2 with 2 point masses by ΔBIC = {format_number(gap)}")
    assert "ne/" not in text and "not identified" not in text
    assert "best_by_log_likelihood" not in summary  # one best (by BIC), not two that disagree

    # The same fits with the runner-up's BIC moved within 2 of the best: too close to call.
    close = {**summary, "fits": [summary["fits"][0],
                                 {**summary["fits"][1], "bic": summary["fits"][0]["bic"] + 1.2}]}
    assert ("but the data cannot tell it from p = 2 with 2 point masses (ΔBIC = 1.2)"
            in get_kind("spine_fit").conclusion(close))

    # p = 2 alone: its lower point mass sinks far below the data (w0 ≈ 0), where its position
    # is not pinned down: a standard error of about 200 decades.
    text, summary = conclude("spine_fit", {"dataset": "example", "potentials": ["p2"],
                                           "init_models": ["point_masses"], "seed": 0})
    fit = summary["fits"][0]
    assert fit["stderr"]["log10_mu_1"] > 100
    assert text.startswith("p = 2 with 2 point masses fits best by BIC (KS distance ")
    # Value and error share their decimals: whole decades when the error is 200 of them.
    position, se = round(fit["params"]["log10_mu_1"]), round(fit["stderr"]["log10_mu_1"])
    assert (f"the position of point mass 1 (log10 w0 = {position} ± {se}) is not identified"
            in text)
    assert "point mass 2" not in text  # the upper one is well determined


# --- finetuning: does the training potential give the most Gaussian change ----------------

TINY = dict(seeds=1, mlp_hidden=16, cnn_channels_1=4, cnn_channels_2=8, rnn_hidden=16,
            pretrain_epochs=3, lr_points=2, lr_min=0.01, lr_max=0.1, epochs=10,
            max_extensions=0, seed=3, device="cpu")


@pytest.mark.parametrize("training, evaluation", [
    (["ne"], ["ne", "p1.1", "p1.2"]),  # negative entropy stands out: it is recovered
    (["p1.5"], ["p1.4", "p1.5", "p1.6"]),  # close neighbours: not every network tells
])
def test_finetuning_conclusion(training: list[str], evaluation: list[str]) -> None:
    text, summary = conclude("finetuning", {**TINY, "training_potentials": training,
                                            "evaluation_potentials": evaluation})
    results = summary["results"]
    misses = [r for r in results if not r["training_is_lowest"]]
    assert text.startswith("The training potential gives the lowest mean ΔCDF (over 1 seed) "
                           f"in {len(results) - len(misses)} of {len(results)} network × "
                           "potential pairs")
    if training == ["ne"]:
        assert not misses and "; not in" not in text
    else:
        assert misses, "the tiny run no longer confuses p = 1.5 with a neighbour"
        for r in misses:
            title = next(n["title"] for n in summary["networks"] if n["name"] == r["network"])
            assert (f"{title} trained with p = 1.5 ({r['lowest']['label']} is lower: "
                    f"{format_number(r['lowest_delta_cdf'])} against "
                    f"{format_number(r['own_delta_cdf'])})") in text
    short = sum(not r["all_reached_100"] for r in results)
    assert (f"in {short} of {len(results)} pairs not every seed reached 100%" in text) == \
        (short > 0)


def test_finetuning_says_when_the_training_potential_was_not_scored() -> None:
    text, _ = conclude("finetuning", {**TINY, "networks": ["mlp"], "training_potentials":
                                      ["ne", "p3"], "evaluation_potentials": ["ne", "p2"]})
    assert "in 1 of 1 network × potential pairs" in text or "in 0 of 1" in text
    assert "p = 3 was not scored" in text


# --- curl descent: simulations against the analytical boundary ---------------------------------

def _phase_summary(stable_learned: int, unstable_learned: int) -> dict:
    return {"layer": "hidden", "activation": "linear", "seeds": 10, "learned_below": 1e-3,
            "overflowed": 0, "regions": {
                "stable": {"cells": 10, "learned": stable_learned, "median_error": 1e-12},
                "unstable": {"cells": 10, "learned": unstable_learned, "median_error": 0.4}}}


def test_curl_phase_diagram_conclusion() -> None:
    from syngeo.kinds.curl.phase_diagram import conclusion

    follows = conclusion(_phase_summary(10, 0))
    assert follows == (
        "With hidden-layer flips in linear networks (10 seeds), the simulations follow the "
        "analytical boundary: inside the stable region 10 of 10 cells reach a mean final test "
        "error below 0.001 (median 1.00e-12); beyond it 0 of 10 cells reach a mean final test "
        "error below 0.001 (median 0.400).")
    assert "students learn beyond the boundary too" in conclusion(_phase_summary(10, 8))
    assert "do not follow the analytical boundary" in conclusion(_phase_summary(3, 0))
    one_sided = _phase_summary(10, 0)
    one_sided["regions"]["unstable"]["cells"] = 0
    assert "cannot test the boundary" in conclusion(one_sided)


def test_curl_order_parameter_conclusion() -> None:
    from syngeo.kinds.curl.order_parameter import conclusion

    def summary(alpha_sides: tuple[int, int], c_sides: tuple[int, int]) -> dict:
        def sides(settled: tuple[int, int]) -> dict:
            return {"stable": {"points": 4, "settled": settled[0], "median_q": 1e-14},
                    "unstable": {"points": 4, "settled": settled[1], "median_q": 0.5}}
        return {"layer": "hidden", "activation": "linear", "seeds": 10, "c_fixed": 0.8,
                "alpha_fixed": 0.6, "settled_below": 1e-3, "overflowed": 0,
                "sweeps": {"along_alpha": sides(alpha_sides), "along_c": sides(c_sides)}}

    assert "keep moving beyond the analytical transition" in conclusion(summary((4, 0), (4, 1)))
    assert "follows the analytical transition along α_h at c = 0.800 only" in \
        conclusion(summary((4, 0), (4, 4)))
    assert "q does not follow the analytical transition" in conclusion(summary((1, 0), (4, 4)))


# --- curl_stability: the analytical boundaries and how many finite-size checks agree -------

STABILITY = dict(diagrams=["hidden"], hidden_c_min=0.1, hidden_c_max=10, check_c_points=2,
                 check_alpha_points=5, check_alpha_min=0.1, check_alpha_max=0.9,
                 curve_points=20, m_total=300, seeds=2, seed=0)


def test_curl_stability_conclusion() -> None:
    # c = 0.1 and 10 lie far on either side of c*(α_h) ∈ [0.25, 0.67]: every check agrees.
    text, summary = conclude("curl_stability", STABILITY)
    assert text == ("Hidden-layer flips destabilise the solution manifold from c ≈ "
                    f"{format_number(summary['hidden_c_star'][0])} (α_h = 0.1) down to c = "
                    "0.250 (α_h = 1); 10 of 10 finite-size checks (M + N = 300, 2 seeds per "
                    "point) agree with the large-network theory.")

    # Tiny networks (M + N = 40, one seed) near the readout boundary: some land on the wrong
    # side, and the sentence names them, nearest the boundary first.
    text, summary = conclude("curl_stability", {
        **STABILITY, "diagrams": ["readout"], "readout_c_min": 0.1, "readout_c_max": 1,
        "check_c_points": 3, "check_alpha_min": 0.05, "check_alpha_max": 0.25, "m_total": 40,
        "seeds": 1})
    wrong = sorted((row for row in summary["checks"] if not row["agree"]),
                   key=lambda row: abs(row["limit_margin"]))
    assert wrong, "tiny networks no longer disagree with the theory anywhere"
    assert text.startswith(f"Readout flips tolerate up to α_r ≈ "
                           f"{format_number(summary['readout_alpha_star'][0])} at c = 0.1 but "
                           "only ")
    assert (f"; {15 - len(wrong)} of 15 finite-size checks (M + N = 40, 1 seed per point) "
            "agree with the large-network theory; they disagree for readout flips at c = "
            f"{format_number(wrong[0]['c'])}, α_r = {format_number(wrong[0]['alpha'])} (finite "
            f"networks: {wrong[0]['observed']}, margin {format_number(wrong[0]['mean_margin'])};"
            f" large networks: {wrong[0]['predicted']}, margin "
            f"{format_number(wrong[0]['limit_margin'])})") in text


# --- curl_spectrum: the smallest eigenvalue of X against the theory's edge and density -----

def test_curl_spectrum_conclusion() -> None:
    text, summary = conclude("curl_spectrum", {"c": 0.3, "alpha_hidden": 0.3, "m_total": 2000,
                                               "seeds": 2, "seed": 0})
    theory = summary["theory"]
    assert text == (f"At c = 0.300, α_h = 0.3 (M = {summary['m']:,}, N = {summary['n']:,}) the "
                    "solution manifold is stable: the smallest eigenvalue of X is "
                    f"{format_pm(summary['smallest_mean'], summary['smallest_sd'])} over 2 "
                    f"networks against the large-network edge "
                    f"{format_number(theory['lower_edge'])} (stable in large networks); the "
                    f"spectrum matches the theory (KS distance {format_number(theory['ks'])}).")
    text, _ = conclude("curl_spectrum", {"c": 0.5, "alpha_hidden": 0.3, "alpha_readout": 0.3,
                                         "m_total": 300, "seeds": 2, "seed": 0})
    assert "no large-network theory covers flips in both layers at once" in text


# --- curl_two_neuron: the origin's eigenvalues and each start's fate under both flows -------

def test_curl_two_neuron_conclusion() -> None:
    # Inside w1² + w2² = 2s curl flow oscillates; outside it converges (tests/test_curl_toy.py
    # covers the other outcomes).
    text, summary = conclude("curl_two_neuron", {"starts": [[0.5, 0.9], [1.6, -0.4]],
                                                 "heatmap_points": 41, "arrow_points": 5})
    assert text == ("Under curl flow the origin is a centre (eigenvalues ±1.00i); 1 of 2 "
                    "starts converges to the stable half of the solution manifold (|w2| > "
                    "|w1|) and 1 of 2 starts, inside w1² + w2² = 2s, keeps oscillating; "
                    "gradient flow converges to the solution manifold from both.")
    assert summary["curl_outcomes"] == {"converged": 1, "oscillating": 1}


# --- curl_single_run: learned or not, settled or not; a manifold start's rise and fall ------

def test_curl_single_run_conclusion() -> None:
    text, summary = conclude("curl_single_run", {"n_total": 100, "c": 0.8, "alpha_hidden": 0.6,
                                                 "epochs": 3000, "q_window": 500,
                                                 "snapshots": 100, "seed": 4})
    assert text == ("At c = 0.800, α_h = 0.600 (linear, N = 55, M = 44) the student did not "
                    "learn the teacher: test error "
                    f"{format_number(summary['final_test_error'])} at epoch 3,000 and the "
                    f"weights keep fluctuating (q = {format_number(summary['q'])}).")
    text, summary = conclude("curl_single_run", {"n_total": 60, "c": 1.0, "alpha_hidden": 0.0,
                                                 "alpha_readout": 0.6, "start": "manifold",
                                                 "epochs": 10_000, "q_window": 500,
                                                 "snapshots": 100, "seed": 0})
    assert text == (
        "Started 1.00e-15 off the solution manifold at c = 1.00, α_r = 0.600 (linear, N = 30, "
        f"M = 30), the test error rose to {format_number(summary['peak_test_error'])} (epoch "
        f"{summary['peak_epoch']:,}) and fell again to "
        f"{format_number(summary['final_test_error'])} by epoch 10,000: the manifold is "
        "unstable here, yet learning re-descends and the weights have settled (q = "
        f"{format_number(summary['q'])}).")


# --- curl_convergence: faster, slower or undecided per swept value; runs that never converge -

def test_curl_convergence_conclusion() -> None:
    from syngeo.kinds.curl.convergence import conclusion

    point = {"value": 500.0, "curl_never": 0, "gradient_never": 1, "verdict": "curl faster"}
    summary = {"sweep": "n_train", "activation": "tanh", "seeds": 10, "epochs": 10_000,
               "threshold": -3.0, "significant_below": 0.05,
               "points": [point, {**point, "value": 2000.0, "verdict": "no difference shown"},
                          {**point, "value": 250.0, "verdict": "cannot decide",
                           "curl_never": 9, "gradient_never": 10}]}
    assert conclusion(summary) == (
        "In tanh networks, curl descent reached a test error of 0.00100 faster than gradient "
        "descent at 1 of 3 values of the training-set size N_train and slower at 0 (p < "
        "0.0500, Wilcoxon signed-rank test over 10 paired seeds, a run that never converged "
        "counting as the slower) — faster at 500; 1 value cannot be decided (no seed "
        "converged under either rule); 9 of 30 curl runs and 12 of 30 gradient runs never "
        "got below 0.00100 within 10,000 epochs.")


# --- spectra_representation: α per layer and whether to believe it ---------------------------

def test_spectra_representation_conclusion() -> None:
    text, summary = conclude("spectra_representation", {"dataset": "example", "bootstrap": 0,
                                                       "layers": ["power_law"]})
    fit = summary["layers"][0]["fit"]
    assert text == (f"Layer 'power_law': α = {format_number(fit['alpha_req']['alpha'])} by "
                    f"α-ReQ, {format_number(fit['likelihood']['alpha'])} by maximum "
                    "likelihood; a power law, and the two fits agree.")
    text, summary = conclude("spectra_representation", {"dataset": "example", "bootstrap": 0})
    alpha = summary["layers"][0]["fit"]["alpha_req"]["alpha"]
    assert text == (f"α-ReQ α = {alpha:.3g} in 'power_law', the one layer with a trusted "
                    "power law; 1 layer flagged as not a trustworthy power law "
                    "('exponential': decays exponentially).")


# --- spectra_layers: α per layer and what lies beyond the random-matrix bulk ------------------

def test_spectra_layers_conclusion() -> None:
    text, _ = conclude("spectra_layers", {"dataset": "example"})
    assert text.endswith("; 1 layer of 2 has eigenvalues beyond the Marchenko–Pastur bulk of "
                         "a random matrix of the same shape and scale.")
    text, _ = conclude("spectra_layers", {"dataset": "example", "compare": "example"})
    assert text.startswith("No layer's α-ReQ α changed by 0.005 or more between the two "
                           "checkpoints")


# --- spectra_ssl: does α rank the models, and what selection by α cost ------------------------

def test_spectra_ssl_conclusion() -> None:
    text, summary = conclude("spectra_ssl", {
        "redundancy_weights": [1e-3, 5e-2], "projector_dims": [16], "views": [2, 3],
        "epochs": 2, "hidden": 64, "features": 32, "rank_max": 20, "min_tail": 10,
        "models_per_round": 2, "keep": 2, "seed": 4})
    a, p = summary["selection"]["alpha"], summary["selection"]["probe"]
    corr = summary["correlation"]
    found = ("the best model" if a["found_best"]
             else f"a model of accuracy {format_number(a['chosen_accuracy'])}")
    strength = ("were rank-correlated" if corr["p_value"] < 0.05
                else "showed no rank correlation that the sweep can establish")
    flagged = sum(1 for r in summary["configurations"] if r["fit"]["flags"])
    assert text == (
        f"Over 4 Barlow Twins configurations, α and probe accuracy {strength} (Spearman ρ = "
        f"{format_number(corr['rho'])}, p = {format_number(corr['p_value'])}, 4 models); "
        f"selection by α (Algorithm 1) found {found} with {a['evaluations']} linear "
        f"evaluation{'s' if a['evaluations'] != 1 else ''}, against 4 to find the best "
        f"({format_number(p['best_accuracy'])}) by probing every model; the untrained "
        f"network's features already reach {format_number(summary['baseline']['probe_accuracy'])}"
        + (f"; {flagged} of 4 spectra were flagged as not a clean power law" if flagged else "")
        + ".")


# --- spectra_geometry: α before and after fine-tuning with each potential ---------------------

def test_spectra_geometry_conclusion() -> None:
    from syngeo.examples import QUICK_SPECS
    from syngeo.kinds.spectra.figures import FLAG_WORDS

    text, summary = conclude("spectra_geometry", QUICK_SPECS["spectra_geometry"])
    nets = {n["name"]: n for n in summary["networks"]}
    words = {"ne": "negative entropy", "p2": "p = 2"}

    def moved(layer: dict) -> float:
        return max(abs(a["delta_mean"] or 0.0) for a in layer["after"])

    def clause(layer: dict, word: str) -> str:
        b = layer["before"]["alpha_req"]
        flags = layer["before"]["flags"] + [c for a in layer["after"] for c in a["flags"]]
        assert moved(layer) >= 0.005  # this run moves every headline layer visibly
        return (f"{word} α of {layer['name']!r} went from {format_number(b)} to "
                + ", ".join(f"{format_number(a['mean'])} with {words[a['potential']]}"
                            for a in layer["after"])
                + (f" (flagged: {FLAG_WORDS[flags[0]]})" if flags else ""))

    mlp_act = max(nets["mlp"]["activations"], key=moved)
    mlp_w = max(nets["mlp"]["weights"], key=moved)
    cnn_act = max(nets["cnn"]["activations"], key=moved)
    rnn_act = nets["rnn"]["activations"][0]
    rnn_w = nets["rnn"]["weights"][1]  # weight_ih (16 × 8) has too few eigenvalues for α
    # The CNN's kernels (4 × 9 and 8 × 36) have 4 and 8 eigenvalues: no α-ReQ fit.
    assert all(w["before"]["alpha_req"] is None for w in nets["cnn"]["weights"])
    assert nets["rnn"]["weights"][0]["before"]["alpha_req"] is None
    fits = [(layer["before"]["flags"], [s for a in layer["after"] for s in a["seeds"]])
            for n in summary["networks"] for layer in n["activations"] + n["weights"]]
    n_fits = sum(1 + len(seeds) for _, seeds in fits)
    n_flagged = sum(bool(b) + sum(bool(s["flags"]) for s in seeds) for b, seeds in fits)
    short = [f"{t} with {words[f['potential']]}" for t, n in (("MLP", "mlp"), ("CNN", "cnn"),
                                                                ("RNN", "rnn"))
             for f in nets[n]["finetuning"] if not f["all_reached_100"]]
    # Every layer with an α that moved by 0.005 or more: do the two potentials' means differ
    # by more than twice the standard error of their difference (2 seeds each)?
    apart, tested = [], 0
    for title, n in (("MLP", "mlp"), ("CNN", "cnn"), ("RNN", "rnn")):
        for what in ("activations", "weights"):
            for layer in nets[n][what]:
                if layer["before"]["alpha_req"] is None or moved(layer) < 0.005:
                    continue
                x, y = layer["after"]
                tested += 1
                se = (x["sd"] ** 2 / 2 + y["sd"] ** 2 / 2) ** 0.5
                if abs(x["mean"] - y["mean"]) > 2 * se:
                    apart.append(f"{title} {layer['name']!r} {what}")
    verdict = ("the seeds cannot tell the potentials apart in any layer that moved"
               if not apart else
               f"the potentials differ beyond the seeds' spread in {len(apart)} of {tested} "
               "layers that moved (" + (", ".join(apart[:-1]) + " and " + apart[-1]
                                        if len(apart) > 1 else apart[0]) + ")")
    expected = (
        "Fine-tuning (α-ReQ α, mean over 2 seeds): "
        f"in the MLP, {clause(mlp_act, 'activation')} and {clause(mlp_w, 'weight')}; "
        f"in the CNN, {clause(cnn_act, 'activation')} and no weight α could be fitted; "
        f"in the RNN, {clause(rnn_act, 'activation')} and {clause(rnn_w, 'weight')}; "
        f"{verdict}; {n_flagged} of {n_fits} fits are flagged as not a trustworthy power law"
        + (f"; not every seed reached 100% training accuracy ({' and '.join(short)})"
           if short else "") + ".")
    assert text == expected
