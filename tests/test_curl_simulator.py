"""The batched curl-descent simulator against a per-sample reference loop of eq. 3–5, and its
guarantees: convergence of gradient descent, independence from how the grid is split,
isolation of overflowing simulations, the order parameter q and refusal of bad inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from syngeo.engine.curl import simulator
from syngeo.engine.curl.kernel import linear_kernel
from syngeo.engine.curl.protocol import CurlConfig, estimate_seconds, layer_sizes
from syngeo.engine.curl.simulator import SimulationCancelled, _draw_block, simulate


def reference_errors(config: CurlConfig, c: float, alpha_h: float, alpha_r: float,
                     seed: int, run_seed: int, epochs: int) -> tuple[list[float], list[float]]:
    """Train and test MSE after 0 … ``epochs`` epochs of a plain per-sample loop: for every
    training sample the outer products of eq. 3–5 are accumulated, then the summed update
    (× learning_rate / n_train) is applied and both layers are renormalised."""
    n_hidden, n_input = layer_sizes(config.n_total, c)
    draws = _draw_block(config, 0, n_hidden, n_input, [seed], np.array([alpha_h]),
                        np.array([alpha_r]), run_seed, "random", torch.device("cpu"))
    as_np = lambda t: t.double().numpy()  # noqa: E731
    w1, w2 = as_np(draws.w1[0, 0]).copy(), as_np(draws.w2[0, 0]).copy()
    t1, t2 = as_np(draws.teacher1[0]), as_np(draws.teacher2[0])
    feedback = as_np(draws.feedback[0, 0])
    d1, d2 = as_np(draws.d1[0, 0]), as_np(draws.d2[0, 0])
    x_train, x_test = as_np(draws.x_train[0]).T, as_np(draws.x_test[0]).T
    norm1, norm2 = np.linalg.norm(w1), np.linalg.norm(w2)
    act = config.activation
    phi = {"linear": lambda h: h, "tanh": np.tanh, "relu": lambda h: np.maximum(h, 0)}[act]
    dphi = {"linear": lambda h: np.ones_like(h), "tanh": lambda h: 1 - np.tanh(h) ** 2,
            "relu": lambda h: (h > 0).astype(float)}[act]

    def mse(x: np.ndarray) -> float:
        return float(np.mean([(w2 @ phi(w1 @ xi) - t2 @ phi(t1 @ xi)) ** 2 for xi in x]))

    def test_error() -> float:
        if act == "linear":          # exact population error for inputs N(0, σ²I)
            u = w2 @ w1 - t2 @ t1
            return config.input_variance * float(u @ u)
        return mse(x_test)

    train, test = [mse(x_train)], [test_error()]
    for _ in range(epochs):
        dw1, dw2 = np.zeros_like(w1), np.zeros_like(w2)
        for x in x_train:
            h = w1 @ x
            e = w2 @ phi(h) - t2 @ phi(t1 @ x)
            back = feedback if config.rule == "feedback_alignment" else w2
            dw1 -= np.outer(back * e * dphi(h), x * d1)
            dw2 -= e * phi(h) * d2
        w1 = w1 + config.learning_rate / config.n_train * dw1
        w2 = w2 + config.learning_rate / config.n_train * dw2
        w1 *= norm1 / np.linalg.norm(w1)
        w2 *= norm2 / np.linalg.norm(w2)
        train.append(mse(x_train))
        test.append(test_error())
    return train, test


@pytest.mark.parametrize("activation", ["linear", "tanh", "relu"])
@pytest.mark.parametrize("rule", ["gradient", "curl", "feedback_alignment"])
def test_epochs_match_a_per_sample_reference_loop(activation: str, rule: str) -> None:
    config = CurlConfig(n_total=20, n_train=40, n_test=30, epochs=3, record_points=4,
                        learning_rate=2.0, activation=activation, rule=rule,
                        dtype="float64", compile="never")
    alpha = 0.0 if rule == "gradient" else 0.5
    result = simulate(config, [0.7], [alpha], [alpha], [2], run_seed=11)
    assert result.record_epochs.tolist() == [0, 1, 2, 3]
    train, test = reference_errors(config, 0.7, alpha, alpha, 2, 11, epochs=3)
    assert np.ptp(test) > 1e-3 * test[0]           # the weights did move
    np.testing.assert_allclose(result.train_error[0, 0, 0, 0], train, rtol=1e-9)
    np.testing.assert_allclose(result.test_error[0, 0, 0, 0], test, rtol=1e-9)


@pytest.mark.parametrize("rule", ["gradient", "curl", "feedback_alignment"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_cpu_kernel_equals_the_eager_epochs(rule: str, dtype: str, monkeypatch) -> None:
    """The C++ kernel (one pass over W1 per epoch, norms carried in closed form) against the
    eager torch epoch, one seed per block on two threads, with q recorded."""
    if linear_kernel() is None:
        pytest.skip("no C++ compiler: the kernel cannot be built here")
    base = dict(n_total=40, epochs=15, record_points=8, learning_rate=0.5, q_window=8,
                dtype=dtype, rule=rule)
    alphas = [0.0] if rule == "gradient" else [0.0, 0.3, 0.8]
    grid = ([0.3, 1.5, 6.0], alphas, alphas, range(3), 5)
    eager = simulate(CurlConfig(**base, compile="never"), *grid)
    monkeypatch.setattr(simulator, "BLOCK_BYTES", 1)
    fast = simulate(CurlConfig(**base, compile="always", workers=2), *grid)
    assert fast.compiled.all() and not eager.compiled.any()
    rtol = 1e-9 if dtype == "float64" else 2e-3
    for name in ("train_error", "test_error", "peak_test_error", "q"):
        expected = getattr(eager, name)
        np.testing.assert_allclose(getattr(fast, name), expected, rtol=rtol,
                                   atol=rtol * 1e-3 * np.nanmax(expected), err_msg=name)
    assert np.ptp(eager.final_test_error) > 0.1 * eager.final_test_error.max()


def test_the_cpu_kernel_isolates_an_overflowing_simulation() -> None:
    if linear_kernel() is None:
        pytest.skip("no C++ compiler: the kernel cannot be built here")
    config = CurlConfig(n_total=30, epochs=500, learning_rate=0.1, renormalize=False,
                        dtype="float64")
    grid = ([1.0], [0.0, 1.0], [0.0, 1.0], [0], 0)
    fast = simulate(replace(config, compile="always"), *grid)
    eager = simulate(replace(config, compile="never"), *grid)
    assert fast.overflowed[0, :, :, 0].tolist() == [[False, False], [False, True]]
    np.testing.assert_array_equal(fast.overflowed, eager.overflowed)
    np.testing.assert_allclose(fast.test_error, eager.test_error, rtol=1e-9,
                               atol=1e-12 * np.nanmax(eager.test_error))


def test_gradient_descent_converges_on_a_linear_student() -> None:
    config = CurlConfig(n_total=30, epochs=2000, learning_rate=0.5, rule="gradient",
                        compile="never")
    result = simulate(config, [1.0], [0.0], [0.0], [0, 1], run_seed=3)
    test = result.test_error[0, 0, 0]                          # (seed, record)
    assert (test[:, -1] < 1e-3 * test[:, 0]).all()
    above_round_off = test[:, 1:] > 1e-9
    assert (np.diff(np.log(test), axis=1) < 1e-3)[above_round_off].mean() > 0.95
    assert (result.peak_test_error[0, 0, 0] == pytest.approx(test[:, 0]))
    assert not result.overflowed.any()


def test_splitting_the_seeds_or_using_threads_changes_no_number() -> None:
    config = CurlConfig(n_total=26, epochs=60, learning_rate=1.0, dtype="float64",
                        compile="never", q_window=20)
    grid = ([0.5, 2.0], [0.0, 0.6], [0.0, 0.3])
    whole = simulate(config, *grid, [0, 1, 2], run_seed=9)
    first = simulate(config, *grid, [0], run_seed=9)
    rest = simulate(config, *grid, [1, 2], run_seed=9)
    threaded = simulate(CurlConfig(**{**vars(config), "workers": 2}), *grid, [0, 1, 2],
                        run_seed=9)
    # A chunk of the grid run elsewhere: the second c alone, at its position in the grid.
    second_c = simulate(config, [2.0], *grid[1:], [0, 1, 2], run_seed=9, c_indices=[1])
    for name in ("train_error", "test_error", "final_test_error", "peak_test_error", "q"):
        joined = np.concatenate([getattr(first, name), getattr(rest, name)], axis=3)
        np.testing.assert_allclose(joined, getattr(whole, name), rtol=1e-12)
        np.testing.assert_allclose(getattr(threaded, name), getattr(whole, name), rtol=1e-12)
        np.testing.assert_allclose(getattr(second_c, name)[0], getattr(whole, name)[1],
                                   rtol=1e-12)
    # every α of one (c, seed) starts from the same student: equal errors at epoch 0
    assert np.ptp(whole.test_error[..., 0], axis=(1, 2)).max() == 0


def test_an_overflowing_simulation_is_flagged_and_isolated() -> None:
    config = CurlConfig(n_total=30, epochs=500, learning_rate=0.1, renormalize=False,
                        dtype="float64", compile="never")
    # α_h = α_r = 1 flips every synapse: gradient ascent without renormalisation blows up
    both = simulate(config, [1.0], [0.0, 1.0], [0.0, 1.0], [0], run_seed=0)
    alone = simulate(config, [1.0], [0.0], [0.0], [0], run_seed=0)
    assert both.overflowed[0, :, :, 0].tolist() == [[False, False], [False, True]]
    assert np.isnan(both.final_test_error[0, 1, 1, 0])
    assert np.isfinite(both.test_error[0][~both.overflowed[0]]).all()
    np.testing.assert_allclose(both.test_error[0, 0, 0], alone.test_error[0, 0, 0], rtol=1e-6,
                               atol=1e-20)


def test_q_is_small_when_converged_and_large_in_the_chaotic_regime() -> None:
    config = CurlConfig(n_total=60, epochs=4000, learning_rate=1.0, q_window=1000,
                        compile="never")
    result = simulate(config, [0.8], [0.0, 0.6], [0.0], [0, 1], run_seed=0)
    converged, chaotic = result.q[0, 0, 0], result.q[0, 1, 0]
    assert (converged < 1e-5).all()
    assert (chaotic > 1e3 * converged.max()).all()
    assert (result.final_test_error[0, 1, 0] > 0.1).all()
    no_q = simulate(CurlConfig(n_total=20, epochs=5, compile="never"), [1.0], [0.0], [0.0],
                    [0], run_seed=0)
    assert np.isnan(no_q.q).all()


def test_progress_and_cancellation() -> None:
    config = CurlConfig(n_total=20, epochs=1000, compile="never")
    seen: list[float] = []
    simulate(config, [1.0], [0.0], [0.0], [0], run_seed=0,
             progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 3

    class Stop(Exception):
        pass

    with pytest.raises(Stop):
        simulate(config, [1.0], [0.0], [0.0], [0], run_seed=0, cancelled=lambda: True,
                 cancel_error=Stop)
    with pytest.raises(SimulationCancelled):
        simulate(config, [1.0], [0.0], [0.0], [0], run_seed=0, cancelled=lambda: True)


@pytest.mark.parametrize(("call", "words"), [
    (lambda: simulate(CurlConfig(), [1.0], [1.5], [0.0], [0], 0), "[0, 1]"),
    (lambda: simulate(CurlConfig(), [1.0], [0.0], [-0.1], [0], 0), "alphas_readout"),
    (lambda: simulate(CurlConfig(), [1000.0], [0.0], [0.0], [0], 0), "hidden (N)"),
    (lambda: simulate(CurlConfig(), [0.001], [0.0], [0.0], [0], 0), "input (M)"),
    (lambda: simulate(CurlConfig(), [0.0], [0.0], [0.0], [0], 0), "positive"),
    (lambda: CurlConfig(activation="sigmoid"), "linear, tanh, relu"),
    (lambda: CurlConfig(rule="hebbian"), "gradient, curl, feedback_alignment"),
    (lambda: CurlConfig(batch_size=0), "batch_size"),
    (lambda: simulate(CurlConfig(rule="gradient"), [1.0], [0.5], [0.0], [0], 0), "curl"),
    (lambda: simulate(CurlConfig(), [1.0], [0.0], [0.0], [0], 0, start="manifold"),
     "float64"),
    (lambda: simulate(CurlConfig(), [1.0], [0.0], [0.0], [0], 0, start="teacher"),
     "random, manifold"),
])
def test_bad_inputs_are_refused_with_the_fix(call, words: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        call()
    assert words in str(err.value)


def test_manifold_start_in_float64_starts_on_the_solution() -> None:
    config = CurlConfig(n_total=30, epochs=10, dtype="float64", compile="never")
    result = simulate(config, [1.0], [0.0], [0.0], [0], run_seed=0, start="manifold")
    assert result.test_error[0, 0, 0, 0, 0] < 1e-25


def test_minibatches_and_cost_estimate() -> None:
    config = CurlConfig(n_total=20, epochs=200, batch_size=10, learning_rate=1.0,
                        compile="never")
    result = simulate(config, [1.0], [0.0], [0.0], [0], run_seed=0)
    test = result.test_error[0, 0, 0, 0]
    assert test[-1] < 0.5 * test[0]
    paper = CurlConfig()
    seconds = estimate_seconds(paper, np.logspace(-1, 2, 20), 21, 10)
    assert 60 < seconds < 10 * 3600


def test_one_cell_of_a_grid_runs_again_alone() -> None:
    """A phase-diagram cell (its c, α and seed positions given) reproduces the grid's
    simulation, as the single-run view needs: the same draws, to round-off (a batch of
    another size rounds its matrix products differently)."""
    config = CurlConfig(n_total=24, epochs=80, learning_rate=0.5, dtype="float64",
                        compile="never")
    grid = simulate(config, [0.5, 2.0], [0.0, 0.4, 0.8], [0.0, 0.5], [0, 1, 2], run_seed=4)
    alone = simulate(config, [2.0], [0.8], [0.5], [2], run_seed=4, c_indices=[1],
                     alpha_indices=([2], [1]))
    np.testing.assert_allclose(alone.test_error[0, 0, 0, 0], grid.test_error[1, 2, 1, 2],
                               rtol=1e-12)
    elsewhere = simulate(config, [2.0], [0.8], [0.5], [2], run_seed=4, c_indices=[1])
    assert not np.allclose(elsewhere.test_error, alone.test_error, rtol=1e-3)  # other flips
    with pytest.raises(ValueError, match="alpha_indices"):
        simulate(config, [2.0], [0.8], [0.5], [2], run_seed=4, alpha_indices=([0, 1], [0]))


@pytest.mark.parametrize("compile_mode", ["never", "always"])
def test_snapshots_hold_the_weights_behind_the_recorded_errors(compile_mode: str) -> None:
    config = CurlConfig(n_total=30, epochs=120, record_points=10, learning_rate=0.5,
                        dtype="float64", compile=compile_mode)
    if compile_mode == "always" and linear_kernel() is None:
        pytest.skip("no C++ compiler: the kernel cannot be built here")
    epochs = [0, 7, 60, 120]
    result = simulate(config, [1.5], [0.3], [0.0], [1], run_seed=6, snapshot_epochs=epochs)
    n_hidden, n_input = layer_sizes(30, 1.5)
    draws = _draw_block(config, 0, n_hidden, n_input, [1], np.array([0.3]), np.array([0.0]),
                        6, "random", torch.device("cpu"))
    s = (draws.teacher2[0] @ draws.teacher1[0]).numpy()
    snaps = result.snapshots[0, 0, 0, 0]
    assert result.snapshot_epochs.tolist() == epochs
    assert snaps.shape == (4, n_hidden * n_input + n_hidden)
    np.testing.assert_array_equal(snaps[0, :n_hidden * n_input],
                                  draws.w1[0, 0].numpy().ravel())
    for k, epoch in enumerate(epochs):
        w1 = snaps[k, :n_hidden * n_input].reshape(n_hidden, n_input)
        w2 = snaps[k, n_hidden * n_input:]
        error = config.input_variance * float(np.sum((w2 @ w1 - s) ** 2))
        if epoch in result.record_epochs:
            recorded = result.test_error[0, 0, 0, 0, list(result.record_epochs).index(epoch)]
            assert error == pytest.approx(recorded, rel=1e-10)
    with pytest.raises(ValueError, match="single c"):
        simulate(config, [1.0, 2.0], [0.0], [0.0], [0], 0, snapshot_epochs=[5])
