"""The eigenspectrum kinds: representation eigenspectra of activations and layer spectra of
checkpoints, run in-process on local files (the CLI's path) and through the REST API on
uploads (the worker's path), checked against the engine called directly and against what
the data were made with."""
# ruff: noqa: F811

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from syngeo.engine.spectra.fits import fit_with_intervals
from syngeo.engine.spectra.weights import layer_spectrum
from syngeo.kinds import get_kind
from syngeo.runner import run_local
from tests.test_api import client, env, queued, run_queued  # noqa: F401


def power_law(alpha: float, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.arange(1, d + 1.0) ** (-alpha / 2)


def test_representation_kind_per_layer(tmp_path):
    layers = {"early": power_law(0.7, 3000, 300, 1), "late": power_law(1.4, 3000, 250, 2)}
    path = tmp_path / "acts.npz"
    np.savez(path, **layers)
    spec, result = run_local("spectra_representation",
                             {"dataset": str(path), "bootstrap": 40, "seed": 5}, device="cpu")
    summary = result.summary
    assert [layer["name"] for layer in summary["layers"]] == ["early", "late"]
    for i, (layer, x) in enumerate(zip(summary["layers"], layers.values(), strict=True)):
        values, fit, boot = fit_with_intervals(x, replicates=40, seed=5)
        assert (layer["samples"], layer["features"]) == x.shape
        assert layer["fit"]["alpha_req"]["alpha"] == pytest.approx(fit.alpha_req.alpha)
        assert layer["fit"]["intervals"]["alpha_req"] == pytest.approx(
            fit.intervals["alpha_req"])
        np.testing.assert_allclose(result.arrays[f"eigenvalues|{i}"], values)
        np.testing.assert_allclose(result.arrays[f"bootstrap|{i}"], boot)
    alphas = [layer["fit"]["alpha_req"]["alpha"] for layer in summary["layers"]]
    assert alphas == pytest.approx([0.7, 1.4], abs=0.05)
    # Every default of the fits is written into the result.
    assert summary["settings"] == {"rank_min": 4, "rank_max": 100, "min_tail": 100,
                                   "xmin_candidates": 50, "min_r2": 0.9}
    assert "'early'" in summary["conclusion"] and "'late'" in summary["conclusion"]

    kind = get_kind("spectra_representation")
    figures = kind.figures(summary, result.arrays)
    assert set(figures) == {"spectrum", "alpha"}
    spectrum = figures["spectrum"]
    buttons = spectrum["layout"]["updatemenus"][0]["buttons"]
    assert [b["label"] for b in buttons] == ["early", "late"]
    # Per layer: the eigenvalues, the α-ReQ line and the likelihood line; one layer shown.
    assert len(spectrum["data"]) == 6
    assert [t["visible"] for t in spectrum["data"]] == [True] * 3 + [False] * 3
    assert spectrum["layout"]["shapes"][0]["x0"] == 4 and spectrum["layout"]["shapes"][0][
        "x1"] == 100
    rows = kind.table_rows(summary)
    assert [r["alpha_req"] for r in rows] == pytest.approx(alphas)


def test_representation_kind_flags_and_layer_choice(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "acts.npz"
    np.savez(path, good=power_law(1.0, 4000, 200, 4),
             fast=rng.standard_normal((4000, 200)) * np.exp(-np.arange(200) / 20.0))
    _, result = run_local("spectra_representation",
                          {"dataset": str(path), "bootstrap": 0, "layers": ["fast"]},
                          device="cpu")
    [layer] = result.summary["layers"]
    assert layer["name"] == "fast" and layer["fit"]["flags"][0]["code"] == "exponential"
    assert "not to be trusted" in result.summary["conclusion"]
    with pytest.raises(ValueError, match="'missing' not in the upload"):
        run_local("spectra_representation",
                  {"dataset": str(path), "bootstrap": 0, "layers": ["missing"]}, device="cpu")


def test_representation_spec_is_checked():
    kind = get_kind("spectra_representation")
    with pytest.raises(ValueError, match="rank_max"):
        kind.Spec.model_validate({"dataset": "ds", "rank_min": 50, "rank_max": 20})
    cheap = kind.estimate(kind.Spec.model_validate({"dataset": "ds", "bootstrap": 10}),
                          [10_000, 2048])
    dear = kind.estimate(kind.Spec.model_validate({"dataset": "ds", "bootstrap": 1000}),
                         [10_000, 2048])
    assert dear.seconds > 50 * cheap.seconds / 2
    assert "10,000 × 2,048" in cheap.work


def conv_checkpoint(seed: int, spikes: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    fc = torch.randn(300, 400, generator=g, dtype=torch.float64) * 0.05
    if spikes:
        u = torch.linalg.qr(torch.randn(300, 2, generator=g, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(400, 2, generator=g, dtype=torch.float64))[0]
        fc += u @ torch.diag(torch.tensor([4.0, 6.0], dtype=torch.float64)) @ v.T * 0.05 * (
            300 * 400) ** 0.25
    return {"conv.weight": torch.randn(64, 8, 3, 3, generator=g, dtype=torch.float64),
            "conv.bias": torch.zeros(64, dtype=torch.float64),
            "fc.weight": fc, "fc.bias": torch.zeros(300, dtype=torch.float64)}


def test_layer_spectra_of_one_and_two_checkpoints(tmp_path):
    before, after = tmp_path / "before.pt", tmp_path / "after.pt"
    torch.save(conv_checkpoint(0, spikes=False), before)
    torch.save(conv_checkpoint(1, spikes=True), after)
    _, result = run_local("spectra_layers", {"dataset": str(before), "compare": str(after)},
                          device="cpu")
    summary = result.summary
    layers = {layer["name"]: layer for layer in summary["layers"]}
    assert set(layers) == {"conv.weight", "fc.weight"} and summary["compared"]
    assert (layers["conv.weight"]["rows"], layers["conv.weight"]["cols"]) == (64, 72)
    assert "out × in·kh·kw" in layers["conv.weight"]["reshaped"]
    # The conv layer is read as w.reshape(out, -1): its spectrum is that matrix's.
    w = conv_checkpoint(0, spikes=False)["conv.weight"].numpy().reshape(64, -1)
    expected, values = layer_spectrum("conv.weight", w)
    np.testing.assert_allclose(result.arrays["eigenvalues|0"], values)
    assert layers["conv.weight"]["spectral_norm"] == pytest.approx(np.linalg.norm(w, 2))
    assert layers["fc.weight"]["bulk"]["n_beyond"] == 0
    assert layers["fc.weight"]["after"]["bulk"]["n_beyond"] == 2
    kind = get_kind("spectra_layers")
    assert set(kind.figures(summary, result.arrays)) == {"spectrum", "spectrum_after", "alpha"}
    assert len(kind.table_rows(summary)) == 4
    assert "Marchenko–Pastur" in summary["conclusion"]

    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.randn(30, 40)}, other)
    with pytest.raises(ValueError, match="compare: the second checkpoint's weight layers"):
        run_local("spectra_layers", {"dataset": str(before), "compare": str(other)},
                  device="cpu")


@pytest.mark.services
def test_representation_run_on_an_upload_through_the_api(client: TestClient,
                                                          queued: list[str]) -> None:
    x = power_law(1.0, 2500, 150, 7).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, x)
    dataset = client.post("/api/datasets/activations",
                          files=[("files", ("acts.npy", buffer.getvalue()))]).json()
    estimate = client.post("/api/kinds/spectra_representation/estimate",
                           json={"dataset": dataset["id"], "bootstrap": 30}).json()
    assert "2,500 × 150" in estimate["work"] and estimate["within_limits"]
    response = client.post("/api/runs", json={"kind": "spectra_representation", "spec": {
        "dataset": dataset["id"], "bootstrap": 30, "seed": 1}})
    assert response.status_code == 201, response.text
    run_queued(queued)
    run = client.get(f"/api/runs/{response.json()['id']}").json()
    assert run["status"] == "succeeded", run["error"]
    result = client.get(f"/api/runs/{run['id']}/result").json()
    [layer] = result["summary"]["layers"]
    _, fit, _ = fit_with_intervals(x.astype(np.float64), replicates=30, seed=1)
    assert layer["fit"]["alpha_req"]["alpha"] == pytest.approx(fit.alpha_req.alpha, rel=1e-9)
    assert set(result["figures"]) == {"spectrum"}
    # A geometry run given this dataset is refused before anything is queued.
    refused = client.post("/api/runs", json={"kind": "geometry",
                                             "spec": {"dataset": dataset["id"]}})
    assert refused.status_code == 422 and "activation matrices" in refused.text
