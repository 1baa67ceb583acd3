"""The Jacobian eigenspectrum of curl descent (§4.2 eq. 10–12, appendix B): the large-network
CDF of X against a numerical integral, finite networks of M ≥ 1,000 against it (KS distance
and lowest edge), the full Jacobian against a finite-difference Jacobian of the flow and
against the criterion on X, and the curl_spectrum kind run in-process."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import integrate

from syngeo.engine.curl import stability as st
from syngeo.formatting import format_number
from syngeo.kinds import get_kind, prepare_spec
from syngeo.kinds.curl import spectrum as kind_module
from syngeo.runner import run_local
from tests.kind_context import RecordingContext

KIND = get_kind("curl_spectrum")
F64 = torch.float64

#: The KS distance bound of finite networks of M = 1,000 (4 networks pooled) from the
#: theory: measured 0.002–0.006 at c < 1 and up to 0.04 at c > 1, where N is smaller and
#: each network's ‖W2‖² (which scales D1, or shifts the whole spectrum for readout flips)
#: departs from 1 by about √(2/N).
KS_BOUND = 0.05


# --- the large-network CDF --------------------------------------------------------------------

CASES = [("hidden", 0.5, 0.3), ("hidden", 0.3, 0.5), ("hidden", 3.0, 0.6), ("hidden", 2.0, 0.0),
         ("readout", 0.5, 0.2), ("readout", 3.0, 0.3), ("readout", 1.0, 0.5)]


@pytest.mark.parametrize(("layer", "c", "alpha"), CASES)
def test_the_cdf_reaches_one_and_matches_a_numerical_integral(layer: str, c: float,
                                                              alpha: float) -> None:
    cdf = st.spectrum_cdf(layer, c, alpha)
    # Continuous part plus atoms: a probability distribution (the readout density diverges
    # at x = 1 when c = 1, an integrable singularity the grid resolves to 2·10⁻⁵).
    assert cdf.total_mass == pytest.approx(1.0, abs=1e-4)
    assert cdf.support.atom_mass == pytest.approx(
        sum(m for _, m in st.atoms(layer, c, alpha)))
    lo = cdf.support.lowest
    hi = max(h for _, h in cdf.support.intervals)
    assert float(cdf(lo - 1e-9)) == 0.0 and float(cdf(hi + 1e-9)) == pytest.approx(1, abs=1e-4)
    # Against scipy's adaptive quadrature of the density plus the atoms below x.
    for x in np.linspace(lo, hi, 7)[1:-1]:
        pieces = [(a, min(b, x)) for a, b in cdf.support.intervals if a < x]
        quad = sum(integrate.quad(lambda t: float(st.density(layer, c, alpha, t)), a, b,
                                  points=[p for p in (-1.0, 1.0) if a < p < b], limit=200)[0]
                   for a, b in pieces)
        quad += sum(m for loc, m in cdf.support.atoms if loc <= x)
        assert float(cdf(x)) == pytest.approx(quad, abs=2e-4), x
    # Monotone, and the continuous part's normalised CDF runs from 0 to 1.
    grid = np.linspace(lo - 0.5, hi + 0.5, 500)
    assert np.all(np.diff(cdf(grid)) >= -1e-12)
    assert cdf.continuous_cdf(hi + 1) == pytest.approx(1.0)


# --- finite networks (M ≥ 1,000) against the theory -----------------------------------------

# (layer, c, α): hidden flips below and above c* (≈ 0.36 at α_h = 0.3), readout flips below
# and above α_r*(0.5) (≈ 0.1); one c > 1 with atoms.
FINITE = [("hidden", 0.3, 0.3, True), ("hidden", 0.8, 0.3, False),
          ("readout", 0.5, 0.05, True), ("readout", 0.5, 0.4, False),
          ("readout", 2.0, 0.1, None)]


@pytest.mark.parametrize(("layer", "c", "alpha", "stable"), FINITE)
def test_finite_spectra_at_m_1000_match_the_density_and_its_edge(
        layer: str, c: float, alpha: float, stable: bool | None) -> None:
    m = 1000
    networks = st.sample_networks(None, *st.layer_fractions(layer, alpha),
                                  sizes=(m, round(m / c)), seeds=4, seed=11)
    eigenvalues = st.network_spectra(networks)
    norms = np.array([float(net.w2 @ net.w2) for net in networks])
    result = st.compare_spectra(eigenvalues, norms, layer, c, alpha)
    assert result.ks < KS_BOUND, result
    assert result.total_mass == pytest.approx(1.0, abs=1e-4)
    edge = float(st.lower_edge(layer, c, alpha))
    assert result.lower_edge_theory == edge
    if stable is not None:
        assert (edge > 0) == stable
    # The lowest eigenvalue sits near the edge: each network within 0.15 (‖W2‖² ≈ 1 ± 0.05
    # and the Tracy–Widom scale M^(−2/3)), their mean within 0.06.
    assert np.all(np.abs(eigenvalues[:, 0] - edge) < 0.15), (eigenvalues[:, 0], edge)
    assert abs(eigenvalues[:, 0].mean() - edge) < 0.06
    # The top of the spectrum too (the largest support edge).
    top = max(hi for _, hi in st.support(layer, c, alpha).intervals)
    assert abs(eigenvalues[:, -1].mean() - top) < 0.15
    # Atoms: c = 2 with readout flips puts mass 1 − 1/c at +1, found at ‖W2‖² exactly.
    if c > 1:
        assert result.atom_mass_theory == pytest.approx((1 - 1 / c,))
        assert result.atom_mass_found[0] == pytest.approx(1 - 1 / c, abs=1e-3)


def test_the_ks_distance_can_fail() -> None:
    """The same networks compared with the wrong theory (another c) are far from it."""
    networks = st.sample_networks(None, 0.3, 0.0, sizes=(1000, 2000), seeds=2, seed=3)
    eigenvalues = st.network_spectra(networks)
    norms = np.array([float(net.w2 @ net.w2) for net in networks])
    assert st.compare_spectra(eigenvalues, norms, "hidden", 0.5, 0.3).ks < KS_BOUND
    assert st.compare_spectra(eigenvalues, norms, "hidden", 0.8, 0.3).ks > 3 * KS_BOUND


def test_both_layers_flipped_have_no_theory() -> None:
    assert st.theory_layer(0.3, 0.2) is None
    assert st.theory_layer(0.3, 0.0) == ("hidden", 0.3)
    assert st.theory_layer(0.0, 0.2) == ("readout", 0.2)
    assert st.theory_layer(0.0, 0.0) == ("hidden", 0.0)   # gradient flow


def test_one_flipped_layer_draws_what_it_always_drew() -> None:
    """Flipping both layers adds the D2 flips after the D1 ones; one layer alone keeps the
    random stream of the single-layer sampler (finite_size_margin is unchanged)."""
    both = st.sample_networks(0.5, 0.3, 0.2, m_total=90, seeds=2, seed=5)
    hidden = st.sample_networks(0.5, 0.3, 0.0, m_total=90, seeds=2, seed=5)
    for b, h in zip(both, hidden, strict=True):
        assert torch.equal(b.w1, h.w1) and torch.equal(b.d1, h.d1)
        m, n = b.sizes
        assert int((b.d1 < 0).sum()) == round(0.3 * m) and int((b.d2 < 0).sum()) == round(0.2 * n)
    np.testing.assert_array_equal(
        st.finite_size_margin(0.5, 0.3, "hidden", m_total=90, seeds=2, seed=5),
        -st.finite_size_spectra(0.5, 0.3, 0.0, m_total=90, seeds=2, seed=5)[:, 0])


# --- the full Jacobian -----------------------------------------------------------------------


def _finite_difference_jacobian(net: st.Network, step: float = 1e-6) -> torch.Tensor:
    """Central differences of the flow (eq. 46–47) in the state (vec W1 row-major, W2)."""
    n, m = net.w1.shape
    s = net.teacher
    state = torch.cat([net.w1.reshape(-1), net.w2])
    columns = []
    for k in range(state.numel()):
        shift = torch.zeros_like(state)
        shift[k] = step
        out = []
        for sign in (1, -1):
            moved = state + sign * shift
            dw1, dw2 = st.flow(moved[: n * m].reshape(n, m), moved[n * m:], s, net.d1, net.d2)
            out.append(torch.cat([dw1.reshape(-1), dw2]))
        columns.append((out[0] - out[1]) / (2 * step))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize(("alpha_hidden", "alpha_readout"),
                         [(0.2, 0.0), (0.7, 0.0), (0.0, 0.3), (0.0, 0.8), (0.4, 0.4)])
def test_full_jacobian_against_finite_differences_and_the_x_criterion(
        alpha_hidden: float, alpha_readout: float) -> None:
    networks = st.sample_networks(None, alpha_hidden, alpha_readout, sizes=(6, 8), seeds=3,
                                  seed=7)
    for net in networks:
        full = st.jacobian(net.w1, net.w2, net.teacher, net.d1, net.d2)
        assert torch.allclose(full, _finite_difference_jacobian(net), atol=1e-7)
        spectrum = st.solution_jacobian_spectrum(net)
        fd_values = np.linalg.eigvals(_finite_difference_jacobian(net).numpy())
        # The same eigenvalues as the finite-difference Jacobian's (by modulus, then real).
        np.testing.assert_allclose(np.sort(np.abs(spectrum.eigenvalues)),
                                   np.sort(np.abs(fd_values)), atol=1e-5)
        x_eigs = st.network_spectrum(net)
        m = 6
        assert spectrum.zero_modes == 8 * 6 + 8 - 6          # NM + N − M (eq. 98)
        assert spectrum.zero_size < 1e-10
        # The M nonzero eigenvalues are −eig(X), real (eq. 12) …
        np.testing.assert_allclose(np.sort(-spectrum.eigenvalues[:m].real), x_eigs, atol=1e-9)
        assert np.abs(spectrum.eigenvalues[:m].imag).max() < 1e-9
        # … so the margin's sign is the X criterion: stable ⇔ X positive definite.
        assert spectrum.margin == pytest.approx(-x_eigs[0], abs=1e-9)
        assert (spectrum.margin < 0) == bool(x_eigs[0] > 0)
        assert spectrum.margin == pytest.approx(float(st.manifold_margin(
            net.w1, net.w2, net.d1, net.d2)), abs=1e-9)


def test_a_full_jacobian_too_big_is_refused_with_the_fix() -> None:
    net = st.sample_networks(None, 0.2, 0.0, sizes=(40, 50), seeds=1)[0]   # NM + N = 2,050
    with pytest.raises(ValueError, match="above the bound 2,000; use a smaller network"):
        st.solution_jacobian_spectrum(net)
    assert kind_module.MAX_JACOBIAN_STATE == st.MAX_JACOBIAN_STATE


# --- the kind: spec -------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "field", "words"), [
    ({"alpha_hidden": 1.5}, "alpha_hidden", "less than or equal to 1"),
    ({"alpha_readout": -0.1}, "alpha_readout", "greater than or equal to 0"),
    ({"c": 0}, "c", "greater than or equal to"),
    ({"m_total": 3}, "m_total", "greater than or equal to 4"),
    ({"m_total": 10, "c": 100}, "m_total", "leaves no neuron in the hidden (N) layer"),
    ({"m_total": 20_000, "seeds": 50, "c": 1.5}, "m_total", "floating-point operations"),
    ({"full_jacobian": True, "m_total": 100, "c": 0.5}, "full_jacobian",
     "lower m_total to at most 94 at c = 0.5, or set full_jacobian to false"),
    ({"alpha": 0.3}, "alpha", "Extra inputs are not permitted"),
])
def test_bad_specs_are_refused_naming_the_field(change: dict, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        KIND.Spec.model_validate(change)
    message = str(refused.value)
    assert field in message and words in message, message


def test_the_largest_jacobian_size_is_the_bound() -> None:
    total = kind_module.largest_jacobian_total(0.5, 100)
    n, m = int(total / 1.5), int(total / 3)
    assert n * m + n <= 2000
    n1, m1 = int((total + 1) / 1.5), int((total + 1) / 3)
    assert n1 * m1 + n1 > 2000
    assert KIND.Spec.model_validate({"full_jacobian": True, "m_total": total, "c": 0.5})


def test_the_estimate_grows_with_the_work_and_needs_no_torch() -> None:
    small = KIND.estimate(prepare_spec(KIND, {"m_total": 600}), [])
    large = KIND.estimate(prepare_spec(KIND, {"m_total": 6000}), [])
    assert large.seconds > 5 * small.seconds and large.memory_bytes > small.memory_bytes
    jac = KIND.estimate(prepare_spec(KIND, {"m_total": 60, "full_jacobian": True}), [])
    plain = KIND.estimate(prepare_spec(KIND, {"m_total": 60}), [])
    assert jac.seconds > 2 * plain.seconds and "full Jacobians of 840 × 840" in jac.work
    import subprocess
    import sys
    code = ("import sys; from syngeo.kinds.curl.spectrum import CurlSpectrumKind as K; "
            "K().estimate(K.Spec(), []); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the kind: runs -------------------------------------------------------------------------

def _run(spec: dict[str, Any]) -> tuple[Any, Any, RecordingContext]:
    ctx = RecordingContext()
    validated = prepare_spec(KIND, spec)
    return validated, KIND.conclude(KIND.run(validated, ctx)), ctx


def test_a_large_hidden_run_matches_the_theory_and_states_it() -> None:
    spec, result, ctx = _run({"c": 0.3, "alpha_hidden": 0.3, "m_total": 4333, "seeds": 2,
                              "bins": 50, "seed": 2})
    summary, arrays = result.summary, result.arrays
    assert (summary["m"], summary["n"]) == (999, 3333)
    assert ctx.calls[0][0] == 0.0 and ctx.calls[-1][0] == 1.0
    fractions = [f for f, _ in ctx.calls]
    assert fractions == sorted(fractions)
    theory = summary["theory"]
    assert theory["available"] and theory["layer"] == "hidden" and theory["stable"]
    assert theory["ks"] < KS_BOUND and theory["matches"]
    assert theory["total_mass"] == pytest.approx(1, abs=1e-4)
    assert theory["lower_edge"] == pytest.approx(float(st.lower_edge("hidden", 0.3, 0.3)))
    # The arrays are the engine's networks: same seed, same eigenvalues.
    again = st.finite_size_spectra(0.3, 0.3, 0.0, m_total=4333, seeds=2, seed=2)
    np.testing.assert_array_equal(arrays["eigenvalues"], again)
    assert summary["smallest"] == pytest.approx(list(again[:, 0]))
    assert summary["stable_networks"] == 2
    # The histogram is a density over the pooled eigenvalues, the theory's grid covers it.
    edges = arrays["histogram_edges"]
    assert np.sum(arrays["histogram"] * np.diff(edges)) == pytest.approx(1.0)
    assert arrays["theory_x"][0] <= again.min() and arrays["theory_x"][-1] >= again.max()
    assert np.trapezoid(arrays["theory_density"], arrays["theory_x"]) == pytest.approx(1, abs=0.01)
    text = summary["conclusion"]
    assert text.startswith(f"At c = 0.300, α_h = 0.3 (M = {summary['m']:,}, N = "
                           f"{summary['n']:,}) the solution manifold is stable: the smallest "
                           "eigenvalue of X is ")
    assert (f"over 2 networks against the large-network edge "
            f"{format_number(theory['lower_edge'])} (stable in large networks); the spectrum "
            f"matches the theory (KS distance {format_number(theory['ks'])}).") in text
    figs = KIND.figures(summary, arrays)
    assert set(figs) == {"spectrum"}
    json.dumps(figs, allow_nan=False)
    names = {t["name"] for t in figs["spectrum"]["data"]}
    assert {"finite networks (histogram)", "large-network density", "support edges"} <= names
    rows = KIND.table_rows(summary)
    assert len(rows) == 2 and {c.key for c in KIND.table_columns(summary)} <= set(rows[0])


def test_a_small_run_draws_the_full_jacobian_and_its_atoms() -> None:
    # c = 2 with readout flips: an atom at +1 of mass 1/2; N·M + N = 20·40 + 20 = 820.
    spec, result, _ = _run({"c": 2.0, "alpha_readout": 0.3, "alpha_hidden": 0.0,
                            "m_total": 60, "seeds": 3, "full_jacobian": True, "seed": 0})
    summary, arrays = result.summary, result.arrays
    jac = summary["jacobian"]
    assert jac["computed"] and jac["size"] == 820 and jac["zero_modes"] == 820 - 40
    assert jac["agreement"] < 1e-9 and jac["zero_size_max"] < 1e-10
    np.testing.assert_allclose(arrays["jacobian_margin"], -arrays["smallest"], atol=1e-9)
    assert arrays["jacobian_real"].shape == (3, 820)
    atoms = summary["theory"]["atoms"]
    assert [a["location"] for a in atoms] == [1.0] and atoms[0]["mass"] == pytest.approx(0.5)
    assert atoms[0]["found"] == pytest.approx(0.5)
    text = summary["conclusion"]
    assert "the full Jacobian's largest real part is " in text
    assert "(its 780 zero modes along the manifold set aside)." in text
    figs = KIND.figures(summary, arrays)
    assert set(figs) == {"spectrum", "jacobian"}
    json.dumps(figs, allow_nan=False)
    spikes = next(t for t in figs["spectrum"]["data"] if t["name"].startswith("atoms"))
    width = arrays["histogram_edges"][1] - arrays["histogram_edges"][0]
    assert spikes["x"][:2] == [1.0, 1.0] and spikes["y"][1] == pytest.approx(0.5 / width)
    plane = figs["jacobian"]
    assert plane["layout"]["shapes"][0]["x0"] == 0  # the imaginary axis
    assert sum(len(t["x"]) for t in plane["data"]) == 3 * 820
    assert {c.key for c in KIND.table_columns(summary)} >= {"jacobian_margin", "zero_size"}


def test_both_layers_flipped_show_the_spectrum_without_a_theory() -> None:
    _, result = run_local("curl_spectrum", {"c": 0.5, "alpha_hidden": 0.3,
                                            "alpha_readout": 0.2, "m_total": 300, "seeds": 2,
                                            "seed": 1}, device="cpu")
    summary, arrays = result.summary, result.arrays
    assert summary["theory"] == {"available": False, "reason": summary["theory"]["reason"]}
    assert not any(k.startswith("theory_") for k in arrays) and "ks_per_network" not in arrays
    text = summary["conclusion"]
    assert "α_h = 0.3 and α_r = 0.2" in text
    assert ("no large-network theory covers flips in both layers at once (appendix B.4 treats "
            "one layer at a time), so the finite-size spectrum is shown without a theoretical "
            "curve.") in text
    fig = KIND.figures(summary, arrays)["spectrum"]
    assert [t["name"] for t in fig["data"]] == ["finite networks (histogram)"]
    assert "no large-network theory" in fig["layout"]["title"]["text"]
    assert {c.key for c in KIND.table_columns(summary)} <= set(KIND.table_rows(summary)[0])


def test_the_conclusion_says_when_the_spectrum_departs() -> None:
    summary = {"c": 0.5, "alpha_hidden": 0.0, "alpha_readout": 0.2, "m": 20, "n": 40,
               "seeds": 3, "stable_networks": 1, "smallest_mean": 0.01, "smallest_sd": 0.2,
               "theory": {"available": True, "lower_edge": -0.66, "stable": False,
                          "ks": 0.12, "matches": False, "match_ks": 0.05},
               "jacobian": {"computed": False}}
    text = kind_module.conclusion(summary)
    assert text == ("At c = 0.500, α_r = 0.2 (M = 20, N = 40) the solution manifold is stable "
                    "in 1 of 3 networks: the smallest eigenvalue of X is 0.010 ± 0.200 over 3 "
                    "networks against the large-network edge -0.660 (unstable in large "
                    "networks); the spectrum departs from the theory (KS distance 0.120, above "
                    "0.05).")
