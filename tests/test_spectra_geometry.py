"""Tests of "Geometry and representations": the ``inspect`` hook of the fine-tuning engine
(syngeo.engine.geometry.finetuning), the spectra of the networks before and after fine-tuning
(syngeo.engine.spectra.finetuned) and the kind (syngeo.kinds.spectra.geometry_representations).

The spectra are checked against an independent recomputation: activations by plain torch
functional code (the RNN's by ``torch.nn.RNN``), fitted directly with ``fit_with_intervals``
and ``layer_spectrum``, from the pretrained network and fine-tuned states the hook handed over,
which are themselves tied to the experiment's own numbers (accuracies, sign flips).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from syngeo.engine.geometry.finetuning import (
    FinetuningSettings,
    KeptRun,
    analysed_weights,
    run_finetuning,
)
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm
from syngeo.engine.spectra.finetuned import (
    SpectraSettings,
    bootstrap_seed,
    paired_change,
    run_finetuning_spectra,
)
from syngeo.engine.spectra.fits import FitSettings, basic_interval, fit_with_intervals
from syngeo.engine.spectra.weights import layer_spectrum
from syngeo.kinds import get_kind
from syngeo.kinds.finetuning import load_digits_images
from syngeo.kinds.spectra.geometry_representations import (
    GeometryRepresentationsSpec,
    spectra_cost,
    told_apart,
)
from syngeo.runner import run_local

TINY = FinetuningSettings(mlp_hidden=32, cnn_channels=(4, 8), rnn_hidden=16, pretrain_epochs=3,
                          lr_min=0.01, lr_max=0.1, lr_points=2, epochs=10, max_extensions=0)
POTENTIALS = [NegativeEntropy(), PNorm(2.0)]
FITS = FitSettings(min_tail=10)
SPECTRA = SpectraSettings(fit=FITS, bootstrap=10, seed=5, device="cpu")
SEEDS, SEED = 2, 4


def _comparable(result: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    summary = result.to_summary()
    summary.pop("seconds")
    for net in summary["networks"]:
        net.pop("pretrain_seconds")
    return summary, result.to_arrays()


def _assert_same(a: Any, b: Any) -> None:
    sa, aa = _comparable(a)
    sb, ab = _comparable(b)
    assert sa == sb
    assert aa.keys() == ab.keys()
    for key in aa:
        np.testing.assert_array_equal(aa[key], ab[key], err_msg=key)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = load_digits_images()
    return images, labels


@pytest.fixture(scope="module")
def runs(digits: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """The same tiny experiment three times: plain, with a callback that keeps what it is
    handed, and with the spectra."""
    images, labels = digits
    common = dict(settings=TINY, seeds=SEEDS, seed=SEED, device="cpu")
    plain = run_finetuning(images, labels, POTENTIALS, POTENTIALS, **common)
    kept: dict[tuple[str, str, int], KeptRun] = {}

    def keep(run: KeptRun) -> str:
        kept[(run.network, run.potential.key, run.seed_index)] = run
        return "kept"

    captured = run_finetuning(images, labels, POTENTIALS, POTENTIALS, inspect=keep, **common)
    spectra = run_finetuning_spectra(images, labels, POTENTIALS, spectra=SPECTRA, **common)
    return {"plain": plain, "captured": captured, "kept": kept, "spectra": spectra}


# --------------------------------------------------------------------------- the hook


def test_the_hook_leaves_every_result_unchanged(runs: dict[str, Any]) -> None:
    _assert_same(runs["plain"], runs["captured"])
    _assert_same(runs["plain"], runs["spectra"].finetuning)
    assert runs["plain"].inspections == {}
    keys = {(n, p.key, s) for n in TINY.networks for p in POTENTIALS for s in range(SEEDS)}
    assert set(runs["captured"].inspections) == keys
    assert set(runs["captured"].inspections.values()) == {"kept"}


def test_a_callback_that_tampers_changes_nothing(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    settings = FinetuningSettings(networks=("mlp",), mlp_hidden=16, pretrain_epochs=2,
                                  lr_points=2, lr_min=0.01, lr_max=0.1, epochs=5,
                                  max_extensions=0)
    common = dict(settings=settings, seeds=2, seed=1, device="cpu")
    plain = run_finetuning(images, labels, POTENTIALS, POTENTIALS, **common)

    def tamper(run: KeptRun) -> None:
        with torch.no_grad():
            for p in run.pretrained.parameters():
                p.add_(1.0)
            for v in run.state.values():
                v.mul_(-3.0)
            run.images.zero_()
            run.pool.zero_()
        torch.rand(1000)  # the global random state is restored afterwards

    _assert_same(plain, run_finetuning(images, labels, POTENTIALS, POTENTIALS, inspect=tamper,
                                       **common))


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


def test_the_hook_hands_over_the_pretrained_and_the_finetuned_networks(
        runs: dict[str, Any], digits: tuple[np.ndarray, np.ndarray]) -> None:
    result, kept = runs["captured"], runs["kept"]
    y = torch.as_tensor(digits[1])
    for (name, key, s), run in kept.items():
        a = result.networks.index(name)
        t = [p.key for p in result.training].index(key)
        x, sub = run.images, run.subset
        assert set(sub.tolist()) <= set(run.pool.tolist())
        assert run.pool.numel() == result.n_pool
        assert _accuracy(run.pretrained, x[sub], y[sub]) == result.initial_accuracy[a, t, s]
        tuned = copy.deepcopy(run.pretrained)
        tuned.load_state_dict(run.state)
        assert _accuracy(tuned, x[sub], y[sub]) == pytest.approx(
            result.final_accuracy[a, t, s], abs=1e-12)
        before, after = analysed_weights(run.pretrained), analysed_weights(tuned)
        flips = sum(int((torch.sign(before[k]) * torch.sign(after[k]) < 0).sum())
                    for k in before)
        assert flips == result.sign_flips[a, t, s]
        # Every kept run of one network starts from the same pretrained weights.
        first = kept[(name, POTENTIALS[0].key, 0)].pretrained.state_dict()
        assert all(torch.equal(v, first[k]) for k, v in run.pretrained.state_dict().items())


# --------------------------------------------------------------------------- the spectra


def _activations(name: str, model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Each representation written out with functional torch (the RNN with nn.RNN)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    with torch.no_grad():
        if name == "mlp":
            h1 = F.relu(F.linear(x.flatten(1), sd["fc1.weight"], sd["fc1.bias"]))
            h2 = F.relu(F.linear(h1, sd["fc2.weight"], sd["fc2.bias"]))
            out = {"fc1": h1, "fc2": h2}
        elif name == "cnn":
            c1 = F.relu(F.conv2d(x[:, None], sd["conv1.weight"], sd["conv1.bias"], padding=1))
            c2 = F.relu(F.conv2d(c1, sd["conv2.weight"], sd["conv2.bias"], padding=1))
            out = {"conv1": c1.flatten(1), "conv2": c2.flatten(1)}
        else:
            hidden = sd["weight_hh"].shape[0]
            rnn = torch.nn.RNN(x.shape[2], hidden, nonlinearity="tanh", batch_first=True)
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(rnn, f"{k}_l0").copy_(sd[k])
            states, _ = rnn(x)
            out = {"hidden": states.flatten(1)}
    return {k: v.double().numpy() for k, v in out.items()}


def _check_state(record: Any, name: str, model: torch.nn.Module, x: torch.Tensor) -> None:
    acts = _activations(name, model, x)
    assert [r.name for r in record.activations] == list(acts)
    for rec in record.activations:
        values, fit, boot = fit_with_intervals(
            acts[rec.name], replicates=SPECTRA.bootstrap, seed=bootstrap_seed(
                SPECTRA.seed, name, rec.name), settings=FITS)
        assert (rec.rows, rec.cols) == acts[rec.name].shape
        np.testing.assert_allclose(rec.eigenvalues, values, rtol=1e-6,
                                   atol=1e-9 * values[0])
        assert rec.fit.alpha_req.alpha == pytest.approx(fit.alpha_req.alpha, rel=1e-6)
        np.testing.assert_allclose(rec.replicates, boot, rtol=1e-6)
        assert [f.code for f in rec.fit.flags] == [f.code for f in fit.flags]
    weights = analysed_weights(model)
    assert [r.name for r in record.weights] == list(weights)
    for rec in record.weights:
        w = weights[rec.name].detach().double()
        layer, values = layer_spectrum(rec.name, w.reshape(w.shape[0], -1).numpy(),
                                       settings=FITS)
        np.testing.assert_array_equal(rec.eigenvalues, values)
        assert rec.fit.to_summary() == layer.fit.to_summary()
        assert (rec.rows, rec.cols) == (w.shape[0], int(np.prod(w.shape[1:])))


def test_before_and_after_fits_match_a_direct_computation(runs: dict[str, Any]) -> None:
    out, kept = runs["spectra"], runs["kept"]
    assert set(out.before) == set(TINY.networks)
    for (name, key, s), run in kept.items():
        x = run.images[run.pool]
        if s == 0 and key == POTENTIALS[0].key:
            _check_state(out.before[name], name, run.pretrained, x)
            assert out.evaluation_images[name] == x.shape[0]
        tuned = copy.deepcopy(run.pretrained)
        tuned.load_state_dict(run.state)
        _check_state(out.after[(name, key, s)], name, tuned, x)


def test_the_change_has_a_paired_bootstrap_interval(runs: dict[str, Any]) -> None:
    out = runs["spectra"]
    before = out.before["mlp"].activations[1]
    after = out.after[("mlp", "ne", 0)].activations[1]
    delta, interval = paired_change(before, after, 0.9)
    assert delta == after.fit.alpha_req.alpha - before.fit.alpha_req.alpha
    diffs = after.replicates - before.replicates
    lo_q, hi_q = np.quantile(diffs, [0.05, 0.95])
    assert interval == pytest.approx([2 * delta - hi_q, 2 * delta - lo_q])
    assert interval == basic_interval(delta, diffs, 0.9)


# --------------------------------------------------------------------------- the kind

QUICK = {"seeds": 2, "mlp_hidden": 32, "cnn_channels_1": 4, "cnn_channels_2": 8,
         "rnn_hidden": 16, "pretrain_epochs": 3, "lr_points": 2, "lr_min": 0.01,
         "lr_max": 0.1, "epochs": 10, "max_extensions": 0, "training_potentials": ["ne", "p2"],
         "bootstrap": 10, "min_tail": 10, "seed": 3}


@pytest.fixture(scope="module")
def kind_run() -> Any:
    _, result = run_local("spectra_geometry", QUICK, device="cpu")
    return result


def test_summary_figures_and_table(kind_run: Any) -> None:
    kind = get_kind("spectra_geometry")
    summary, arrays = kind_run.summary, kind_run.arrays
    pots = [p["key"] for p in summary["training_potentials"]]
    assert pots == ["ne", "p2"] and summary["seeds"] == 2
    nets = {n["name"]: n for n in summary["networks"]}
    assert [a["name"] for a in nets["mlp"]["activations"]] == ["fc1", "fc2"]
    assert [w["name"] for w in nets["cnn"]["weights"]] == ["conv1.weight", "conv2.weight"]
    assert [a["name"] for a in nets["rnn"]["activations"]] == ["hidden"]
    assert nets["rnn"]["activations"][0]["cols"] == 8 * 16
    assert nets["cnn"]["activations"][1]["cols"] == 8 * 64
    n_layers = sum(len(n["activations"]) + len(n["weights"]) for n in summary["networks"])
    # Per layer: the pretrained eigenvalues and one array per potential and seed.
    assert len(arrays) == n_layers * (1 + len(pots) * summary["seeds"])
    for net in summary["networks"]:
        for layer in net["activations"] + net["weights"]:
            for after in layer["after"]:
                finite = [v for v in after["alpha_req"] if v is not None]
                if finite:
                    assert after["mean"] == pytest.approx(np.mean(finite))
                    assert after["delta_mean"] == pytest.approx(
                        np.mean(finite) - layer["before"]["alpha_req"])
                if len(finite) == 2:
                    assert after["sd"] == pytest.approx(np.std(finite, ddof=1))
    figs = kind.figures(summary, arrays)
    assert set(figs) == {"activation_alpha", "weight_alpha", "spectra"}
    # Before, then each potential: a mean trace each and, with two seeds, a seeds trace each.
    assert len(figs["activation_alpha"]["data"]) == 1 + 2 * len(pots)
    n_act = sum(len(n["activations"]) for n in summary["networks"])
    assert figs["activation_alpha"]["layout"]["meta"]["layers"][:2] == ["MLP fc1", "MLP fc2"]
    assert len(figs["activation_alpha"]["layout"]["xaxis"]["ticktext"]) == n_act
    spectra = figs["spectra"]
    assert len(spectra["data"]) == n_layers * (1 + len(pots))
    assert len(spectra["layout"]["updatemenus"][0]["buttons"]) == n_layers
    rows = kind.table_rows(summary)
    assert len(rows) == n_layers * (1 + len(pots))
    keys = {c.key for c in kind.table_columns(summary)}
    assert keys <= set(rows[0])


def test_told_apart_uses_the_standard_error_over_seeds() -> None:
    def layer(sd: float) -> dict[str, Any]:
        return {"after": [{"mean": 1.0, "sd": sd, "fitted": 3},
                          {"mean": 1.1, "sd": sd, "fitted": 3}]}

    # |Δ| = 0.1 against 2·√(2·sd²/3): apart for sd = 0.05 (0.082), not for sd = 0.07 (0.114).
    assert told_apart(layer(0.05), 3) is True
    assert told_apart(layer(0.07), 3) is False
    assert told_apart(layer(0.05), 1) is None
    assert told_apart({"after": layer(0.05)["after"][:1]}, 3) is None


def test_spec_defaults_and_cost() -> None:
    spec = GeometryRepresentationsSpec()
    assert spec.min_tail == 50 and spec.mlp_hidden == 256 and spec.seeds == 3
    assert spec.finetuning_spec().evaluation_potentials == ["ne", "p2", "p3"]
    seconds, _ = spectra_cost(spec)
    assert seconds < spectra_cost(spec.model_copy(update={"bootstrap": 200}))[0]
    with pytest.raises(ValueError, match="lr_min"):
        GeometryRepresentationsSpec(lr_min=1.0, lr_max=0.1)
    with pytest.raises(ValueError, match="less than or equal to 30"):
        GeometryRepresentationsSpec(seeds=31)
