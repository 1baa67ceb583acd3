"""Tests for syngeo.io.weights: every accepted format, and every bad upload's message."""

from __future__ import annotations

import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

from syngeo.io.weights import WeightDataError, WeightPairs, example_path, read_weight_pairs

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)
BEFORE = RNG.normal(0.0, 0.1, size=50)
AFTER = BEFORE + RNG.normal(0.0, 0.01, size=50)


def write_table(path: Path, rows: list[list[object]], delimiter: str = ",") -> Path:
    path.write_text("\n".join(delimiter.join(str(c) for c in row) for row in rows) + "\n")
    return path


def pair_rows(header: bool = True) -> list[list[object]]:
    # repr() round-trips floats exactly.
    rows: list[list[object]] = [
        [repr(float(b)), repr(float(a))] for b, a in zip(BEFORE, AFTER, strict=True)
    ]
    return ([["before", "after"]] if header else []) + rows


def single(pairs: WeightPairs) -> tuple[np.ndarray, np.ndarray]:
    assert list(pairs.layers) == ["weights"]
    return pairs.layers["weights"]


def assert_error(exc: pytest.ExceptionInfo[WeightDataError], *words: str) -> None:
    message = str(exc.value).lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in {message!r}"
    assert exc.value.problem and exc.value.fix
    assert str(exc.value) == f"{exc.value.problem} {exc.value.fix}"


def mlp_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2)
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def shifted(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v + 1 if v.is_floating_point() else v.clone() for k, v in state.items()}


# --------------------------------------------------------------------------- text tables


@pytest.mark.parametrize(
    ("delimiter", "header"),
    [(",", True), (",", False), ("\t", True), (";", True), (" ", False), ("   ", True)],
)
def test_text_delimiters_and_header(tmp_path: Path, delimiter: str, header: bool) -> None:
    path = write_table(tmp_path / "w.txt", pair_rows(header), delimiter)
    before, after = single(read_weight_pairs([path]))
    np.testing.assert_array_equal(before, BEFORE)
    np.testing.assert_array_equal(after, AFTER)
    assert before.dtype == np.float64


def test_csv_format_shape_and_summary(tmp_path: Path) -> None:
    pairs = read_weight_pairs([write_table(tmp_path / "w.csv", pair_rows())])
    assert pairs.format == "csv" and pairs.n_pairs == 50
    assert pairs.shapes == {"weights": [50]} and pairs.skipped == []
    summary = json.loads(json.dumps(pairs.summary()))
    layer = summary["layers"][0]
    assert summary["format"] == "csv" and summary["n_pairs"] == 50
    assert layer["name"] == "weights" and layer["n"] == 50 and layer["shape"] == [50]
    assert layer["before"]["mean"] == pytest.approx(BEFORE.mean())
    assert layer["after"]["max"] == pytest.approx(AFTER.max())
    expected_flips = int(np.sum(np.sign(BEFORE) != np.sign(AFTER)))
    assert layer["n_sign_flips"] == expected_flips and layer["n_zero"] == 0


def test_tsv_format_name(tmp_path: Path) -> None:
    path = write_table(tmp_path / "stored.tmp", pair_rows(), "\t")
    assert read_weight_pairs([path], names=["w.tsv"]).format == "tsv"


def test_text_niceties(tmp_path: Path) -> None:
    # Byte-order mark, comments, blank lines, quoted header, trailing delimiters.
    path = tmp_path / "w.csv"
    path.write_text('\ufeff# exported by the microscope\n"before","after",\n\n1.5,2.5,\n-3,4e-2\n')
    before, after = single(read_weight_pairs([path]))
    np.testing.assert_array_equal(before, [1.5, -3.0])
    np.testing.assert_array_equal(after, [2.5, 0.04])


def test_semicolon_decimal_comma(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("vorher;nachher\n0,5;0,75\n-1,25;2\n")
    before, after = single(read_weight_pairs([path]))
    np.testing.assert_array_equal(before, [0.5, -1.25])
    np.testing.assert_array_equal(after, [0.75, 2.0])


def test_header_names_pick_columns(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text(",synapse,After,Before\n0,7,0.2,0.1\n1,8,0.4,0.3\n")
    before, after = single(read_weight_pairs([path]))
    np.testing.assert_array_equal(before, [0.1, 0.3])
    np.testing.assert_array_equal(after, [0.2, 0.4])


def test_two_single_column_files(tmp_path: Path) -> None:
    b = write_table(tmp_path / "b.csv", [["before"]] + [[repr(float(x))] for x in BEFORE])
    a = write_table(tmp_path / "a.txt", [[repr(float(x))] for x in AFTER])
    before, after = single(read_weight_pairs([b, a]))
    np.testing.assert_array_equal(before, BEFORE)
    np.testing.assert_array_equal(after, AFTER)


def test_names_override_stored_temp_names(tmp_path: Path) -> None:
    path = write_table(tmp_path / "upload-1234", pair_rows())
    assert read_weight_pairs([path], names=["mine.csv"]).n_pairs == 50
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path], names=["mine.xlsx"])
    assert exc.value.file == "mine.xlsx"
    assert_error(exc, "mine.xlsx", "not recognised", ".csv", "export")


# --------------------------------------------------------------------------- NumPy


def test_npy_two_columns(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.column_stack([BEFORE, AFTER]).astype(np.float32))
    pairs = read_weight_pairs([tmp_path / "w.npy"])
    before, after = single(pairs)
    assert pairs.format == "npy" and before.dtype == np.float64
    np.testing.assert_array_equal(before, BEFORE.astype(np.float32))
    np.testing.assert_array_equal(after, AFTER.astype(np.float32))


def test_npy_two_files_memory_mapped(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", BEFORE.reshape(5, 10))
    np.save(tmp_path / "a.npy", AFTER.reshape(5, 10))
    pairs = read_weight_pairs([tmp_path / "b.npy", tmp_path / "a.npy"])
    before, after = single(pairs)
    assert pairs.shapes == {"weights": [5, 10]}
    np.testing.assert_array_equal(before, BEFORE)
    np.testing.assert_array_equal(after, AFTER)
    # float64 on disk: a read-only view of the memory map, not a copy.
    assert not before.flags.writeable and not before.flags.owndata


def test_npy_fortran_order_stays_paired(tmp_path: Path) -> None:
    matrix_b, matrix_a = BEFORE.reshape(5, 10), AFTER.reshape(5, 10)
    np.save(tmp_path / "b.npy", np.asfortranarray(matrix_b))
    np.save(tmp_path / "a.npy", matrix_a)
    before, after = single(read_weight_pairs([tmp_path / "b.npy", tmp_path / "a.npy"]))
    np.testing.assert_array_equal(before, BEFORE)
    np.testing.assert_array_equal(after, AFTER)


@pytest.mark.parametrize(("key_b", "key_a"), [("before", "after"), ("w0", "w1")])
def test_npz_single_file(tmp_path: Path, key_b: str, key_a: str) -> None:
    np.savez(tmp_path / "w.npz", **{key_b: BEFORE, key_a: AFTER, "note": np.arange(3)})
    pairs = read_weight_pairs([tmp_path / "w.npz"])
    before, after = single(pairs)
    assert pairs.format == "npz" and pairs.skipped == ["note"]
    np.testing.assert_array_equal(before, BEFORE)
    np.testing.assert_array_equal(after, AFTER)


def test_npz_two_files_per_layer(tmp_path: Path) -> None:
    w1, w2, bias = RNG.normal(size=(3, 4)), RNG.normal(size=(2, 3)), RNG.normal(size=3)
    np.savez_compressed(tmp_path / "b.npz", fc1=w1, fc2=w2, fc1_bias=bias)
    np.savez_compressed(tmp_path / "a.npz", fc1=w1 * 2, fc2=w2 * 2, fc1_bias=bias)
    pairs = read_weight_pairs([tmp_path / "b.npz", tmp_path / "a.npz"])
    assert list(pairs.layers) == ["fc1", "fc2"] and pairs.skipped == ["fc1_bias"]
    assert pairs.shapes == {"fc1": [3, 4], "fc2": [2, 3]}
    np.testing.assert_array_equal(pairs.layers["fc2"][1], (w2 * 2).ravel())


def test_npz_two_files_with_one_unnamed_array_each(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", BEFORE)
    np.savez(tmp_path / "a.npz", AFTER)
    pairs = read_weight_pairs([tmp_path / "b.npz", tmp_path / "a.npz"])
    assert list(pairs.layers) == ["arr_0"]
    np.testing.assert_array_equal(pairs.layers["arr_0"][1], AFTER)


# --------------------------------------------------------------------------- checkpoints


def test_safetensors_per_layer_with_half_precision(tmp_path: Path) -> None:
    w1 = RNG.normal(size=(3, 4)).astype(np.float32)
    w2 = RNG.normal(size=(2, 3)).astype(np.float16)
    tensors = {"fc1.weight": w1, "fc2.weight": w2, "fc1.bias": np.zeros(3, np.float32)}
    tensors["steps"] = np.arange(4, dtype=np.int64).reshape(2, 2)
    save_file(tensors, tmp_path / "b.safetensors")
    save_file({k: v * 2 for k, v in tensors.items()}, tmp_path / "a.safetensors")
    pairs = read_weight_pairs([tmp_path / "b.safetensors", tmp_path / "a.safetensors"])
    assert pairs.format == "safetensors"
    assert sorted(pairs.layers) == ["fc1.weight", "fc2.weight"]
    assert sorted(pairs.skipped) == ["fc1.bias", "steps"]
    np.testing.assert_array_equal(pairs.layers["fc2.weight"][0], w2.astype(np.float64).ravel())
    np.testing.assert_array_equal(pairs.layers["fc1.weight"][1], (w1 * 2).ravel())


def test_safetensors_bfloat16(tmp_path: Path) -> None:
    weight = torch.randn(4, 5).to(torch.bfloat16)
    save_torch_file({"w.weight": weight}, tmp_path / "b.safetensors")
    save_torch_file({"w.weight": weight * 2}, tmp_path / "a.safetensors")
    pairs = read_weight_pairs([tmp_path / "b.safetensors", tmp_path / "a.safetensors"])
    before, after = pairs.layers["w.weight"]
    np.testing.assert_array_equal(before, weight.double().ravel().numpy())
    np.testing.assert_array_equal(after, (weight * 2).double().ravel().numpy())


def test_safetensors_float8(tmp_path: Path) -> None:
    values = torch.linspace(-400, 400, 41).reshape(1, 41)
    tensors = {
        "e4m3.weight": values.to(torch.float8_e4m3fn),
        "e5m2.weight": values.to(torch.float8_e5m2),
    }
    save_torch_file(tensors, tmp_path / "b.safetensors")
    save_torch_file(tensors, tmp_path / "a.safetensors")
    pairs = read_weight_pairs([tmp_path / "b.safetensors", tmp_path / "a.safetensors"])
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(pairs.layers[name][0], tensor.double().ravel().numpy())


def test_layer_selection_by_name(tmp_path: Path) -> None:
    names = ["subnet.weight", "layer1.bn1.weight", "ln.norm_proj", "emb.weight", "fc.bias_raw"]
    tensors = {name: np.ones((2, 2), np.float32) for name in names}
    save_file(tensors, tmp_path / "b.safetensors")
    save_file(tensors, tmp_path / "a.safetensors")
    pairs = read_weight_pairs([tmp_path / "b.safetensors", tmp_path / "a.safetensors"])
    assert sorted(pairs.layers) == ["emb.weight", "subnet.weight"]
    assert sorted(pairs.skipped) == ["fc.bias_raw", "layer1.bn1.weight", "ln.norm_proj"]


def test_torch_legacy_format(tmp_path: Path) -> None:
    state = mlp_state()
    torch.save(state, tmp_path / "b.pt", _use_new_zipfile_serialization=False)
    torch.save(shifted(state), tmp_path / "a.pt", _use_new_zipfile_serialization=False)
    pairs = read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert list(pairs.layers) == ["0.weight", "2.weight"]


def test_torch_mlp_with_batchnorm(tmp_path: Path) -> None:
    state = mlp_state()
    torch.save(state, tmp_path / "b.pt")
    torch.save(shifted(state), tmp_path / "a.pth")
    pairs = read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pth"])
    assert pairs.format == "torch"
    assert list(pairs.layers) == ["0.weight", "2.weight"]
    assert pairs.shapes == {"0.weight": [3, 4], "2.weight": [2, 3]}
    assert pairs.skipped == [
        "0.bias",
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "2.bias",
    ]
    before, after = pairs.layers["0.weight"]
    np.testing.assert_allclose(before, state["0.weight"].double().ravel().numpy())
    np.testing.assert_allclose(after - before, 1.0, rtol=1e-6)


def test_torch_include_all(tmp_path: Path) -> None:
    state = mlp_state()
    torch.save(state, tmp_path / "b.pt")
    torch.save(shifted(state), tmp_path / "a.pt")
    pairs = read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"], include_all=True)
    assert len(pairs.layers) == 8 and pairs.skipped == ["1.num_batches_tracked"]
    assert pairs.shapes["1.running_var"] == [3]


def test_torch_rnn(tmp_path: Path) -> None:
    rnn = torch.nn.RNN(4, 5)
    torch.save(rnn.state_dict(), tmp_path / "b.bin")
    torch.save(shifted(rnn.state_dict()), tmp_path / "a.bin")
    pairs = read_weight_pairs([tmp_path / "b.bin", tmp_path / "a.bin"])
    assert list(pairs.layers) == ["weight_ih_l0", "weight_hh_l0"]
    assert pairs.skipped == ["bias_ih_l0", "bias_hh_l0"]
    assert pairs.shapes == {"weight_ih_l0": [5, 4], "weight_hh_l0": [5, 5]}


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_torch_wrapped_state_dict(tmp_path: Path, key: str) -> None:
    state = mlp_state()
    torch.save({key: state, "epoch": 3}, tmp_path / "b.ckpt")
    torch.save({key: shifted(state), "epoch": 9}, tmp_path / "a.ckpt")
    pairs = read_weight_pairs([tmp_path / "b.ckpt", tmp_path / "a.ckpt"])
    assert list(pairs.layers) == ["0.weight", "2.weight"]


def test_torch_data_parallel_prefix_and_bfloat16(tmp_path: Path) -> None:
    weight = torch.randn(3, 3, dtype=torch.bfloat16)
    torch.save({"module.fc.weight": weight}, tmp_path / "b.pt")
    torch.save({"fc.weight": weight * 2}, tmp_path / "a.pt")
    pairs = read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    np.testing.assert_array_equal(pairs.layers["fc.weight"][0], weight.double().ravel().numpy())


def test_import_does_not_load_torch(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", pair_rows())
    code = (
        "import sys; from syngeo.io.weights import read_weight_pairs; "
        f"read_weight_pairs([{str(path)!r}]); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- bad uploads


@pytest.mark.parametrize("name", ["w.csv", "w.npy", "w.npz", "w.safetensors", "w.pt"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / name, tmp_path / name])
    assert_error(exc, name, "empty", "upload the file again")


def test_blank_text_file_is_empty(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("\n  \n# only a comment\n")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.csv"])
    assert_error(exc, "empty", "export")


def truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_truncated_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", BEFORE)
    np.save(tmp_path / "a.npy", AFTER)
    truncate(tmp_path / "a.npy")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.npy", tmp_path / "a.npy"])
    assert_error(exc, "a.npy", "cut short", "shape (50,)", "upload the complete file")


def test_corrupt_npy_header(tmp_path: Path) -> None:
    (tmp_path / "w.npy").write_text("before,after\n1,2\n")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npy"])
    assert_error(exc, "w.npy", "could not be read", "corrupt", "save it again")


@pytest.mark.parametrize("name", ["w.npz", "w.safetensors"])
def test_truncated_archives(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    arrays = {"fc.weight": RNG.normal(size=(20, 20))}
    np.savez(path, **arrays) if name.endswith(".npz") else save_file(arrays, path)
    truncate(path)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path, path])
    assert_error(exc, name, "truncated or corrupt", "upload the complete file")


def test_truncated_torch_checkpoint(tmp_path: Path) -> None:
    torch.save(mlp_state(), tmp_path / "b.pt")
    torch.save(mlp_state(), tmp_path / "a.pt")
    truncate(tmp_path / "a.pt")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert_error(exc, "a.pt", "truncated or corrupt", "pytorch checkpoint")


def test_corrupt_npz_member(tmp_path: Path) -> None:
    # A member whose bytes were damaged after zipping: the CRC check must catch it.
    path = tmp_path / "w.npz"
    np.savez(path, before=BEFORE, after=AFTER)
    data = bytearray(path.read_bytes())
    offset = data.index(BEFORE.tobytes()[:16])
    data[offset : offset + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "w.npz", "corrupt")


@pytest.mark.parametrize(
    ("name", "hint"),
    [("w.xlsx", "csv"), ("w.mat", "writematrix"), ("w.pkl", "never loaded"), ("w", ".npy")],
)
def test_unknown_format(tmp_path: Path, name: str, hint: str) -> None:
    (tmp_path / name).write_text("1,2\n")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / name])
    assert_error(exc, name, "not recognised", "accepted", ".safetensors", ".pt", hint)


def test_three_files(tmp_path: Path) -> None:
    paths = [write_table(tmp_path / f"{i}.csv", [[1.0]]) for i in range(3)]
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs(paths)
    assert_error(exc, "3 files", "upload one or two files")


def test_no_files() -> None:
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([])
    assert_error(exc, "0 files", "upload one or two files")


def test_single_column_file(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", [["before"], [0.1], [0.2]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "w.csv", "single column", "second file", "two columns")


def test_single_1d_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", BEFORE)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npy"])
    assert_error(exc, "1-d array", "second file")


def test_single_npy_wrong_shape(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.zeros((2, 50)))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npy"])
    assert_error(exc, "(n, 2)", "(2, 50)", "column_stack")


@pytest.mark.parametrize("name", ["w.pt", "w.safetensors"])
def test_single_checkpoint(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save(mlp_state(), path) if name.endswith(".pt") else save_file({"w": BEFORE}, path)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "only one", "two", "before learning first")


def test_two_files_with_two_columns(tmp_path: Path) -> None:
    b = write_table(tmp_path / "b.csv", pair_rows())
    a = write_table(tmp_path / "a.csv", pair_rows())
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([b, a])
    assert_error(exc, "b.csv", "2 columns", "one column per file")


def test_too_many_columns(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "3 columns", "expected 2", "header row")


def test_nan_in_csv(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", [["before", "after"], [1, 2], [3, "nan"], [4, "inf"]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "w.csv", "column 2 (after)", "2 nan or inf", "row 3", "remove")


def test_inf_in_npy(tmp_path: Path) -> None:
    after = AFTER.copy()
    after[[7, 9]] = [np.inf, np.nan]
    np.save(tmp_path / "b.npy", BEFORE)
    np.save(tmp_path / "a.npy", after)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.npy", tmp_path / "a.npy"])
    assert_error(exc, "a.npy", "2 nan or inf", "1 nan, 1 inf", "index 7", "replace")


def test_nan_in_checkpoint_layer(tmp_path: Path) -> None:
    state = mlp_state()
    broken = shifted(state)
    broken["2.weight"][1, 1] = float("nan")
    torch.save(state, tmp_path / "b.pt")
    torch.save(broken, tmp_path / "a.pt")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert_error(exc, "a.pt", "layer '2.weight'", "1 nan", "index 4", "remove")


def test_length_mismatch_text(tmp_path: Path) -> None:
    b = write_table(tmp_path / "b.csv", [[x] for x in BEFORE])
    a = write_table(tmp_path / "a.csv", [[x] for x in AFTER[:-1]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([b, a])
    assert_error(exc, "b.csv has 50", "a.csv has 49", "same synapses")


def test_shape_mismatch_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", BEFORE.reshape(5, 10))
    np.save(tmp_path / "a.npy", AFTER.reshape(10, 5))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.npy", tmp_path / "a.npy"])
    assert_error(exc, "shape (5, 10)", "shape (10, 5)", "same synapses")


def test_shape_mismatch_single_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", before=BEFORE, after=AFTER[:-2])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npz"])
    assert_error(exc, "array 'before' in w.npz has shape (50,)", "'after' has shape (48,)")


def test_shape_mismatch_checkpoint(tmp_path: Path) -> None:
    save_file({"fc.weight": np.zeros((3, 4), np.float32)}, tmp_path / "b.safetensors")
    save_file({"fc.weight": np.zeros((4, 3), np.float32)}, tmp_path / "a.safetensors")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.safetensors", tmp_path / "a.safetensors"])
    assert_error(exc, "fc.weight (3, 4) vs (4, 3)", "same architecture")


def test_names_in_one_checkpoint_only(tmp_path: Path) -> None:
    before = {f"enc.{i}.weight": torch.zeros(2, 2) for i in range(7)} | {"shared": torch.ones(2)}
    after = {"head.weight": torch.zeros(2, 2), "shared": torch.ones(2)}
    torch.save(before, tmp_path / "b.pt")
    torch.save(after, tmp_path / "a.pt")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert_error(
        exc, "7 only in b.pt", "enc.4.weight", "2 more", "1 only in a.pt: head.weight", "same model"
    )
    assert "enc.5.weight" not in str(exc.value)


def test_no_layer_left(tmp_path: Path) -> None:
    state = {"fc.bias": torch.zeros(3), "norm.weight": torch.ones(3)}
    torch.save(state, tmp_path / "b.pt")
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert_error(exc, "no layer is left", "fc.bias", "include_all=true")
    pairs = read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"], include_all=True)
    assert list(pairs.layers) == ["fc.bias", "norm.weight"]


def test_non_numeric_cell(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", [["before", "after"], [1, 2], [3, "4.o"], [5, 6]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "w.csv", "row 3, column 2 (after)", "'4.o'", "not a number", "delete")


def test_empty_cell(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", [[1, 2], ["", 4]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "row 2, column 1 (before) is empty")


def test_ragged_rows(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", [[1, 2], [3, 4], [5, 6, 7]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "row 3 has 3 values", "row 1 has 2", "same number of columns")


def test_binary_file_named_csv(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", BEFORE)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npy"], names=["w.csv"])
    assert_error(exc, "w.csv", "not utf-8 text", "plain-text csv")


def test_mixed_formats(tmp_path: Path) -> None:
    b = write_table(tmp_path / "b.csv", [[x] for x in BEFORE])
    np.save(tmp_path / "a.npy", AFTER)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([b, tmp_path / "a.npy"])
    assert_error(exc, "mixes formats", "b.csv (csv/tsv text)", "a.npy (numpy .npy)", "same format")


def test_header_only_csv(tmp_path: Path) -> None:
    path = write_table(tmp_path / "w.csv", [["before", "after"]])
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([path])
    assert_error(exc, "w.csv", "no weights", "only a header row")


def test_empty_npz_and_empty_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npz"])
    assert_error(exc, "no weights", "no arrays")
    np.save(tmp_path / "b.npy", np.zeros(0))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.npy", tmp_path / "b.npy"])
    assert_error(exc, "no weights", "shape (0,)")


def test_checkpoint_without_tensors(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "b.pt")
    torch.save({"epoch": 4, "lr": 0.1}, tmp_path / "a.pt")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert_error(exc, "b.pt", "no tensors", "epoch", "state_dict()")


def test_npz_without_before_after(tmp_path: Path) -> None:
    np.savez(tmp_path / "w.npz", x=BEFORE, y=AFTER)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npz"])
    assert_error(exc, "'before' and 'after'", "'x', 'y'", "np.savez(path, before=")


def test_npy_under_npz_name(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.column_stack([BEFORE, AFTER]))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npy"], names=["w.npz"])
    assert_error(exc, "single .npy array", "rename it to .npy")


def test_object_arrays_refused(tmp_path: Path) -> None:
    objects = np.array([{"w": 1.0}, [2.0]], dtype=object)
    np.save(tmp_path / "w.npy", objects, allow_pickle=True)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npy", tmp_path / "w.npy"])
    assert_error(exc, "python objects", "never unpickled", "dtype=float")
    np.savez(tmp_path / "w.npz", before=objects, after=objects)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npz"])
    assert_error(exc, "array 'before'", "python objects", "never unpickled")


def test_non_numeric_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "w.npy", np.array([["a", "b"]]))
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "w.npy"])
    assert_error(exc, "not real numbers", "dtype=float")


class CustomState:
    """A class a weights-only load must refuse."""

    def __init__(self) -> None:
        self.step = 3


def test_torch_custom_object_refused(tmp_path: Path) -> None:
    state = mlp_state()
    torch.save({"state_dict": state, "extra": CustomState()}, tmp_path / "b.pt")
    torch.save(state, tmp_path / "a.pt")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert_error(exc, "b.pt", "pickled python objects", "customstate", "model.state_dict()")


class WritesMarker:
    """Pickles to a call that creates a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_plain_pickle_named_pt_is_not_executed(tmp_path: Path) -> None:
    control = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(WritesMarker(control)))
    assert control.exists()  # the payload works when unpickled the unsafe way

    marker = tmp_path / "marker"
    payload = pickle.dumps({"fc.weight": WritesMarker(marker)})
    for name in ("b.pt", "a.pt"):
        (tmp_path / name).write_bytes(payload)
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert not marker.exists()
    assert_error(exc, "b.pt", "never unpickled", "state_dict()")


def test_torch_non_mapping(tmp_path: Path) -> None:
    torch.save([torch.zeros(2, 2)], tmp_path / "b.pt")
    torch.save(torch.zeros(2, 2), tmp_path / "a.pt")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.pt", tmp_path / "a.pt"])
    assert_error(exc, "b.pt", "holds a list", "not a state dict", "model.state_dict()")


def test_junk_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "b.ckpt").write_text("this is not a checkpoint")
    with pytest.raises(WeightDataError) as exc:
        read_weight_pairs([tmp_path / "b.ckpt", tmp_path / "b.ckpt"])
    assert_error(exc, "b.ckpt", "could not be read as a pytorch checkpoint")


def test_error_survives_pickling() -> None:
    error = WeightDataError("Row 3 is bad.", "Fix row 3.", file="w.csv")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.problem, copy.fix, copy.file, str(copy)) == (
        "w.csv: Row 3 is bad.",
        "Fix row 3.",
        "w.csv",
        "w.csv: Row 3 is bad. Fix row 3.",
    )


# --------------------------------------------------------------------------- bundled example


def test_example_matches_script(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_examples", ROOT / "scripts/make_examples.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = module.write_example(tmp_path)
    bundled = example_path()
    assert generated.read_bytes() == bundled.read_bytes()
    assert bundled.stat().st_size < 1_000_000

    pairs = read_weight_pairs([bundled])
    before, after = single(pairs)
    assert pairs.n_pairs == 20_000 and pairs.format == "csv"
    assert np.mean(np.abs(before)) == pytest.approx(0.1, rel=0.05)  # E|w0| = 1/sqrt(D)
    assert pairs.summary()["layers"][0]["n_sign_flips"] == 0
    # The dual change under negative entropy has the std the generator put in.
    dual = np.sign(after) * (1 + np.log(np.abs(after))) - np.sign(before) * (
        1 + np.log(np.abs(before))
    )
    assert np.std(dual) == pytest.approx(0.1 * abs(1 + np.log(0.1)), rel=0.05)
