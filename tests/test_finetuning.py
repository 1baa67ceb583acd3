"""Tests of the fine-tuning experiment (paper §4.3, Fig. 4B and 7A, appendix B.3): the engine
(syngeo.engine.geometry.finetuning) and its kind (syngeo.kinds.finetuning), on the 8×8 digits.

One reduced run (2 seeds, the default networks, the paper's Fig. 4B evaluation potentials
NE, 1.5, 2, 2.5, 3) is shared by most tests; it takes about 10 s on two cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from syngeo.engine.geometry.finetuning import (
    FinetuningSettings,
    analysed_weights,
    build_network,
    deterministic,
    finetune,
    run_finetuning,
    sample_size,
    search_learning_rate,
)
from syngeo.engine.geometry.potentials import NegativeEntropy, PNorm
from syngeo.kinds.base import Cancelled, KindResult
from syngeo.kinds.finetuning import FinetuningKind, FinetuningSpec, load_digits_images
from tests.kind_context import RecordingContext as Ctx

PAPER_EVALUATION = ["ne", "p1.5", "p2", "p2.5", "p3"]  # the paper's code for Fig. 4B / 7A
# Every network keeps its default size (MLP h = 64, CNN 16/32 channels, RNN 64 units):
# Theorem 1 needs width, and smaller networks missed the claim (at h = 32 the 3-norm-trained
# MLP's change was most Gaussian near p = 2.5; a CNN with 8/16 channels, D = 1224, N = 34,
# at 1.5, 3 and 2.5 when trained with NE, 2 and 3; an RNN with 32 units trained with p = 2
# moved far (dual change 4.4) and was most Gaussian in NE). Only the seeds are fewer (2).
REDUCED = dict(seeds=2, evaluation_potentials=PAPER_EVALUATION, seed=0, device="cpu")
TINY = dict(seeds=1, mlp_hidden=16, cnn_channels_1=4, cnn_channels_2=8, rnn_hidden=16,
            pretrain_epochs=3, lr_points=2, lr_min=0.01, lr_max=0.1, epochs=10,
            max_extensions=0, evaluation_potentials=["ne", "p2"], seed=3, device="cpu")




@pytest.fixture(scope="module")
def reduced() -> tuple[FinetuningSpec, KindResult, Ctx]:
    spec = FinetuningSpec(**REDUCED)
    ctx = Ctx()
    return spec, FinetuningKind().run(spec, ctx), ctx


# --------------------------------------------------------------------------- spec


def test_spec_defaults_follow_the_paper() -> None:
    spec = FinetuningSpec()
    assert spec.networks == ["mlp", "cnn", "rnn"]
    assert spec.training_potentials == ["ne", "p2", "p3"]
    assert spec.evaluation_potentials is None  # NE and p = 1.1 … 3.0
    assert (spec.seeds, spec.data_exponent, spec.lr_points, spec.epochs, spec.epoch_increment,
            spec.max_extensions, spec.momentum, spec.batch_size) == (5, 0.5, 5, 30, 30, 4,
                                                                      0.9, 256)
    canonical = FinetuningSpec(training_potentials=["NE", "p=2", "2", "negative entropy"],
                               networks=["rnn", "rnn", "mlp"])
    assert canonical.training_potentials == ["ne", "p2"]
    assert canonical.networks == ["rnn", "mlp"]


@pytest.mark.parametrize("bad, field", [
    ({"seeds": 0}, "seeds"),
    ({"seeds": 31}, "seeds"),
    ({"mlp_hidden": 2}, "mlp_hidden"),
    ({"rnn_hidden": 4096}, "rnn_hidden"),
    ({"cnn_channels_1": 0}, "cnn_channels_1"),
    ({"networks": []}, "networks"),
    ({"networks": ["vgg"]}, "networks"),
    ({"training_potentials": []}, "training_potentials"),
    ({"training_potentials": ["p1"]}, "p > 1"),
    ({"training_potentials": ["hebbian"]}, "unknown potential"),
    ({"evaluation_potentials": []}, "at least one evaluation potential"),
    ({"holdout_fraction": 0.95}, "holdout_fraction"),
    ({"data_exponent": 0.1}, "data_exponent"),
    ({"lr_min": 1.0, "lr_max": 0.1}, "lr_min"),
    ({"lr_min": 0.0}, "lr_min"),
    ({"momentum": 1.0}, "momentum"),
    ({"epochs": 0}, "epochs"),
    ({"max_extensions": 11}, "max_extensions"),
    ({"batch_size": 0}, "batch_size"),
    ({"device": "tpu"}, "device"),
    ({"layers": 3}, "layers"),  # unknown fields are refused, not ignored
    ({"seeds": 30, "networks": ["cnn"], "cnn_channels_1": 128, "cnn_channels_2": 256,
      "lr_points": 16, "epochs": 300}, "multiply-adds"),
])
def test_spec_rejects_bad_values(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        FinetuningSpec(**bad)
    assert field in str(err.value)


def test_kind_module_does_not_import_torch() -> None:
    code = ("import sys, syngeo.kinds.finetuning as k; k.FinetuningSpec(seeds=3); "
            "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- engine pieces


def test_engine_settings_and_sizes() -> None:
    with pytest.raises(ValueError, match="networks"):
        FinetuningSettings(networks=())
    with pytest.raises(ValueError, match="lr_min"):
        FinetuningSettings(lr_min=1.0, lr_max=0.5)
    with pytest.raises(ValueError, match="cnn_channels"):
        FinetuningSettings(cnn_channels=(4,))  # type: ignore[arg-type]
    assert sample_size(8100, 0.5) == 90 and sample_size(8192, 0.5) == 90
    assert sample_size(3, 0.5) == 2
    grid = FinetuningSettings().lr_grid()
    np.testing.assert_allclose(grid, [1e-3, 1e-2, 1e-1, 1.0, 10.0])


def test_analysed_weights_leave_out_readout_and_biases() -> None:
    settings = FinetuningSettings(mlp_hidden=8, cnn_channels=(2, 3), rnn_hidden=5)
    expected = {"mlp": {"fc1.weight": 64 * 8, "fc2.weight": 8 * 8},
                "cnn": {"conv1.weight": 9 * 2, "conv2.weight": 9 * 2 * 3},
                "rnn": {"weight_ih": 5 * 8, "weight_hh": 5 * 5}}
    for name, sizes in expected.items():
        model = build_network(name, settings, 8, 8, 10, seed=0)  # type: ignore[arg-type]
        assert {k: p.numel() for k, p in analysed_weights(model).items()} == sizes
        every = dict(model.named_parameters())
        assert "readout.weight" in every and any("bias" in k for k in every)
    # Normalisation layers are left out too (none of the three networks has one).
    normed = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    normed.readout = torch.nn.Linear(4, 2)
    assert list(analysed_weights(normed)) == ["0.weight"]


def test_search_adds_epochs_while_accuracy_is_below_100() -> None:
    # A learning rate far too small to fit: B.3's rule adds 30 epochs up to 4 times.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 8, 8, generator=g), torch.arange(12) % 3
    model = build_network("mlp", FinetuningSettings(mlp_hidden=8), 8, 8, 3, seed=1)
    settings = FinetuningSettings(lr_min=1e-9, lr_max=1e-9, lr_points=1, epochs=2,
                                  epoch_increment=3, max_extensions=2)
    with deterministic():  # one thread: oversubscribed threads make tiny steps slow
        search = search_learning_rate(lambda: build_network("mlp", FinetuningSettings(
            mlp_hidden=8), 8, 8, 3, seed=1), x, y, PNorm(2.0), settings)
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        run = finetune(model, x, y, NegativeEntropy(), lr=1.0, epochs=20)
    assert [r[0] for r in search.rounds] == [2, 5, 8]
    assert search.epochs == 8 and not search.reached_100
    assert search.run.final_accuracy < 1.0
    # Negative entropy keeps every weight's sign (appendix C), even at a large rate.
    assert not run.diverged and run.final_loss < run.loss[0]
    for k, w in model.named_parameters():
        assert bool((torch.sign(w) == torch.sign(before[k])).all()), k


# --------------------------------------------------------------------------- the reduced run


def test_reduced_run_fits_every_set(reduced: tuple[FinetuningSpec, KindResult, Ctx],
                                    ) -> None:
    _, result, ctx = reduced
    arrays, summary = result.arrays, result.summary
    # B.3: fine-tuned "until 100 % training accuracy".
    assert (arrays["final_accuracy"] == 1.0).all(), arrays["final_accuracy"]
    assert (arrays["epochs"] >= 30).all()
    assert all(row["all_reached_100"] for row in summary["results"])
    for net in summary["networks"]:
        assert net["pretrain_accuracy"] > 0.95 and net["pool_accuracy"] > 0.9, net
    # Negative entropy never changes a weight's sign; the p-norms usually do somewhere.
    ne = summary["training_potentials"].index(next(
        p for p in summary["training_potentials"] if p["key"] == "ne"))
    assert (arrays["sign_flips"][:, ne] == 0).all()
    assert (arrays["sign_flips"].sum(axis=(0, 2)) > 0).sum() >= 1
    # Progress was reported often, in order, ending at 1.
    fractions = [f for f, _ in ctx.calls]
    assert len(fractions) > 100 and fractions[-1] == 1.0
    assert all(0.0 <= a <= b <= 1.0 for a, b in zip(fractions, fractions[1:], strict=False))


def test_reduced_run_result_shape(reduced: tuple[FinetuningSpec, KindResult, Ctx]) -> None:
    spec, result, _ = reduced
    arrays, summary = result.arrays, result.summary
    n_a, n_t, n_s, n_e = 3, 3, spec.seeds, len(PAPER_EVALUATION)
    assert arrays["delta_cdf"].shape == (n_a, n_t, n_s, n_e)
    assert arrays["dual_change"].shape == (n_a, n_t, n_s, n_e)
    assert arrays["layer_delta_cdf"].shape == (n_a, n_t, n_s, 2, n_e)
    assert np.isfinite(arrays["delta_cdf"]).all() and np.isfinite(arrays["dual_change"]).all()
    assert arrays["loss_curves"].shape[:3] == (n_a, n_t, n_s)
    assert arrays["search_loss"].shape == (n_a, n_t, n_s, spec.max_extensions + 1,
                                           spec.lr_points)
    assert arrays["pretrain_loss"].shape == (n_a, spec.pretrain_epochs)
    assert list(arrays["evaluation_keys"]) == PAPER_EVALUATION
    assert list(arrays["network_keys"]) == ["mlp", "cnn", "rnn"]
    # N = ⌊√D⌋ for D analysed weights (MLP: 64·64 + 64·64 = 8192 → 90).
    nets = {n["name"]: n for n in summary["networks"]}
    assert nets["mlp"]["n_weights"] == 8192 and nets["mlp"]["n_used"] == 90
    for net in nets.values():
        assert net["n_used"] == math.isqrt(net["n_weights"]) and not net["n_capped"]
    assert len(summary["results"]) == n_a * n_t
    row = summary["results"][0]
    assert len(row["mean_delta_cdf"]) == n_e and len(row["lr"]) == n_s
    assert [layer["name"] for layer in row["layers"]] == ["fc1.weight", "fc2.weight"]
    assert summary["dataset"]["images"] == 1797 and len(summary["dataset"]["sha256"]) == 64
    json.dumps(summary, allow_nan=False)
    np.savez(__import__("io").BytesIO(), **arrays)  # plain arrays, no pickles
    assert all(a.dtype != object for a in arrays.values())
    rows = FinetuningKind().table_rows(summary)
    assert len(rows) == n_a * n_t * n_e and sum(r["lowest"] for r in rows) == n_a * n_t


# Observed on the reduced run (seed 0, 2 seeds), mean ΔCDF scored in NE/1.5/2/2.5/3:
#   MLP trained with NE 0.26/0.32/0.41/0.48/0.53, p = 2 0.75/0.45/0.27/0.33/0.41,
#       p = 3 0.70/0.63/0.46/0.31/0.27;
#   CNN trained with NE 0.13/0.20/0.31/0.40/0.48, p = 2 0.77/0.38/0.16/0.21/0.30,
#       p = 3 0.77/0.70/0.51/0.23/0.14;
#   RNN trained with NE 0.06/0.14/0.25/0.35/0.42, p = 2 0.73/0.35/0.06/0.14/0.25,
#       p = 3 0.63/0.55/0.34/0.13/0.06.
# The MLP and the RNN match with master seeds 0, 1 and 2 too; the CNN is the closest call:
# with master seed 1 its NE-trained change scored 0.197 in NE against 0.192 at p = 1.5 and
# its 2-norm-trained one 0.25 at p = 2 against 0.23 at 2.5 (with 4 seeds it matched for
# master seeds 0–2, by as little as 0.005).
@pytest.mark.parametrize("network", ["mlp", "cnn", "rnn"])
def test_reduced_run_training_potential_is_most_gaussian(
        reduced: tuple[FinetuningSpec, KindResult, Ctx], network: str) -> None:
    """Fig. 4B / 7A's claim on the reduced run: scored in NE, 1.5, 2, 2.5 and 3 (the paper's
    set), each network's change is most Gaussian in the potential it was trained with. On
    the finer default grid (p = 1.1 … 3.0) the 3-norm-trained MLP is usually most Gaussian
    at p = 2.9, 0.001–0.005 below p = 3 (see the kind's report), as the paper found for some
    EfficientNets (§4.3)."""
    _, result, _ = reduced
    summary, arrays = result.summary, result.arrays
    a = list(arrays["network_keys"]).index(network)
    trained = [p["key"] for p in summary["training_potentials"]]
    rows = [row for row in summary["results"] if row["network"] == network]
    assert [row["training"]["key"] for row in rows] == trained == ["ne", "p2", "p3"]
    for t, row in enumerate(rows):
        # The mean over seeds of the per-seed scores, and its lowest entry, found here.
        mean = arrays["delta_cdf"][a, t].mean(axis=0)
        assert row["mean_delta_cdf"] == pytest.approx(mean.tolist(), rel=1e-9)
        assert PAPER_EVALUATION[int(np.argmin(mean))] == trained[t], (network, trained[t],
                                                                     mean.round(3))
        assert row["training_is_lowest"] and row["training_rank"] == 1
    # Multiplicative and additive updates are told apart clearly (§4.3): NE-trained is far
    # from Gaussian in the 2- and 3-norm, and p-norm-trained far from Gaussian in NE.
    by_key = {row["training"]["key"]: row["mean_delta_cdf"] for row in rows}
    assert by_key["ne"][0] + 0.1 < min(by_key["ne"][2:])
    assert by_key["p2"][2] + 0.2 < by_key["p2"][0] and by_key["p3"][4] + 0.2 < by_key["p3"][0]
    # The change is small in the dual space (lazy regime behind Eq. 14).
    for row in rows:
        assert row["own_dual_change"] < 0.3


def test_figures(reduced: tuple[FinetuningSpec, KindResult, Ctx]) -> None:
    _, result, _ = reduced
    figs = FinetuningKind().figures(result.summary, result.arrays)
    assert set(figs) == {"delta_cdf", "curves", "pretraining"}
    json.dumps(figs, allow_nan=False)
    delta = figs["delta_cdf"]
    assert delta["layout"]["xaxis"]["ticktext"][0] == "NE"
    assert delta["layout"]["xaxis"]["tickvals"][0] == 1.0  # NE at p = 1 (footnote 2)
    lines = [t for t in delta["data"] if t["mode"] == "lines+markers"]
    assert len(lines) == 3 * 3  # one line per training potential in each network's panel
    seeds = [t for t in delta["data"] if t.get("name", "").endswith("seeds")]
    assert len(seeds) == 9 and len(seeds[0]["y"]) == 2 * len(PAPER_EVALUATION)
    menu = figs["curves"]["layout"]["updatemenus"][0]
    assert [b["label"] for b in menu["buttons"]] == ["MLP", "CNN", "tanh RNN (row by row)"]
    assert len(figs["curves"]["data"]) == 3 * 3 * 2 * 2  # nets × potentials × seeds × panels
    assert len(figs["pretraining"]["data"]) == 3 * 3


# --------------------------------------------------------------------------- reproducibility


def test_same_spec_same_result_and_global_state_restored() -> None:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng = torch.random.get_rng_state()
    spec = FinetuningSpec(**TINY)
    first = FinetuningKind().run(spec, Ctx())
    second = FinetuningKind().run(spec, Ctx())
    assert first.arrays.keys() == second.arrays.keys()
    for key, value in first.arrays.items():
        assert np.array_equal(value, second.arrays[key], equal_nan=value.dtype.kind == "f"), key
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.random.get_rng_state(), rng)
    # A different seed draws different fine-tuning sets.
    other = FinetuningKind().run(spec.model_copy(update={"seed": 4}), Ctx())
    assert not np.array_equal(first.arrays["delta_cdf"], other.arrays["delta_cdf"])


def test_cancel_propagates() -> None:
    ctx = Ctx(cancel_after=3)
    with pytest.raises(Cancelled):
        FinetuningKind().run(FinetuningSpec(**TINY), ctx)
    assert len(ctx.calls) == 4


def test_engine_rejects_bad_data() -> None:
    images, labels, _ = load_digits_images()
    with pytest.raises(ValueError, match="shape"):
        run_finetuning(images.reshape(len(images), -1), labels, [PNorm(2.0)])
    with pytest.raises(ValueError, match="labels"):
        run_finetuning(images, labels[:-1], [PNorm(2.0)])
    with pytest.raises(ValueError, match="training potential"):
        run_finetuning(images, labels, [])
