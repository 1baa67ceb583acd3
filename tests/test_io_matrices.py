"""Reading activation matrices and checkpoints' weight layers (syngeo.io.matrices): shapes
and values against the arrays written, the conv reshape against ``w.reshape(out, -1)``, and
a message naming the problem and the fix for every bad input. No services needed; the
upload endpoints are tested in tests/test_matrix_upload.py."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

from syngeo.backend.routes.costs import dataset_sizes
from syngeo.io import arrays
from syngeo.io.matrices import (
    MIN_FEATURES,
    MIN_SAMPLES,
    NamedMatrices,
    read_activations,
    read_checkpoint,
    read_matrices,
)
from syngeo.io.weights import UploadTooLargeError, WeightDataError
from syngeo.kinds.base import (
    MATRIX_FORMATS,
    distribution_dataset_problem,
    matrices_dataset_problem,
    pairs_dataset_problem,
)
from syngeo.runner import LocalContext
from tests.kind_context import RecordingContext


def matrix(n: int = 40, d: int = 16, seed: int = 0, dtype: type = np.float64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def refused(exc: pytest.ExceptionInfo[WeightDataError], *words: str, fix: str = "") -> None:
    """The error names the problem (``words``, in order-free lower case) and a fix."""
    message = f"{exc.value.problem} {exc.value.fix}".lower()
    for word in words:
        assert word.lower() in message, (word, message)
    assert exc.value.fix
    if fix:
        assert fix.lower() in exc.value.fix.lower(), (fix, exc.value.fix)


# ----------------------------------------------------------------------------- activations


def test_npy_is_one_layer_named_after_the_file_and_stays_mapped(tmp_path: Path) -> None:
    a = matrix(50, 20)
    np.save(tmp_path / "upload0", a)
    read = read_activations([tmp_path / "upload0.npy"], ["resnet_layer3.npy"])
    assert list(read.layers) == ["resnet_layer3"] and read.format == "npy"
    layer = read.layers["resnet_layer3"]
    np.testing.assert_array_equal(layer, a)
    assert layer.dtype == np.float64 and arrays.mapping(layer) is not None  # not copied
    assert read.shapes == {"resnet_layer3": [50, 20]} and read.reshaped == {}
    assert read.n_values == 1000

    summary = read.summary()
    [row] = summary["layers"]
    assert (row["rows"], row["cols"], row["n"], row["reshaped"]) == (50, 20, 1000, None)
    for key, value in (("mean", a.mean()), ("std", a.std()), ("min", a.min()),
                       ("max", a.max())):
        assert row[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert summary["format"] == "npy" and summary["skipped"] == []


def test_trailing_dimensions_are_flattened_into_features(tmp_path: Path) -> None:
    a = np.random.default_rng(1).standard_normal((12, 4, 3, 5)).astype(np.float32)
    np.save(tmp_path / "conv.npy", np.asfortranarray(a))  # Fortran order on disk
    read = read_activations(tmp_path / "conv.npy")
    np.testing.assert_array_equal(read.layers["conv"], a.reshape(12, -1).astype(np.float64))
    assert read.shapes["conv"] == [12, 4, 3, 5]
    assert read.reshaped["conv"] == ("activations (12, 4, 3, 5) read as 12 × 60 (samples × "
                                     "features: the trailing dimensions 4·3·5 flattened)")


def test_npz_layers_skip_vectors_and_integers(tmp_path: Path) -> None:
    l1, l2 = matrix(30, 12, 1), matrix(30, 40, 2, np.float32)
    np.savez(tmp_path / "a.npz", block1=l1, labels=np.arange(30), block2=l2,
             counts=np.ones((30, 12), dtype=np.int64))
    read = read_activations(tmp_path / "a.npz")
    assert list(read.layers) == ["block1", "block2"] and read.format == "npz"
    np.testing.assert_array_equal(read.layers["block1"], l1)
    np.testing.assert_array_equal(read.layers["block2"], l2.astype(np.float64))
    assert read.skipped == ["labels", "counts"]
    # An integer .npy on its own is one layer (e.g. spike counts), read as float.
    np.save(tmp_path / "counts.npy", np.arange(200).reshape(20, 10))
    counts = read_activations(tmp_path / "counts.npy").layers["counts"]
    np.testing.assert_array_equal(counts, np.arange(200.0).reshape(20, 10))


def test_safetensors_and_torch_layers(tmp_path: Path) -> None:
    st = {"enc.0": matrix(20, 10, 3, np.float32), "enc.1": matrix(20, 11, 4),
          "ids": np.arange(20, dtype=np.int64)}
    save_file(st, str(tmp_path / "a.safetensors"))
    read = read_activations(tmp_path / "a.safetensors")
    assert list(read.layers) == ["enc.0", "enc.1"] and read.skipped == ["ids"]
    np.testing.assert_array_equal(read.layers["enc.0"], st["enc.0"].astype(np.float64))
    np.testing.assert_array_equal(read.layers["enc.1"], st["enc.1"])

    bf16 = torch.randn(16, 12).to(torch.bfloat16)
    save_torch_file({"h": bf16}, str(tmp_path / "b.safetensors"))
    np.testing.assert_array_equal(read_activations(tmp_path / "b.safetensors").layers["h"],
                                  bf16.to(torch.float64).numpy())

    pt = {"h1": torch.randn(15, 20, dtype=torch.float64), "h2": torch.randn(15, 2, 3, 4),
          "epoch": 7}
    torch.save(pt, tmp_path / "acts.pt")
    read = read_activations(tmp_path / "acts.pt")
    assert read.format == "torch" and read.skipped == ["epoch"]
    np.testing.assert_array_equal(read.layers["h1"], pt["h1"].numpy())
    np.testing.assert_array_equal(read.layers["h2"],
                                  pt["h2"].reshape(15, -1).to(torch.float64).numpy())
    assert read.reshaped["h2"].startswith("activations (15, 2, 3, 4) read as 15 × 24")
    # One bare tensor (torch.save(feats, path)): a layer named after the file.
    feats = torch.randn(30, 10)
    torch.save(feats, tmp_path / "upload0")
    read = read_activations([tmp_path / "upload0"], ["penultimate.pth"])
    np.testing.assert_array_equal(read.layers["penultimate"], feats.double().numpy())


def test_text_tables(tmp_path: Path) -> None:
    a = matrix(12, 10, 5)
    lines = ["# activations of layer 3", "\t".join(f"unit{j}" for j in range(10)), ""]
    lines += ["\t".join(f"{v:.17g}" for v in row) for row in a]
    (tmp_path / "a.tsv").write_text("\n".join(lines) + "\n")
    read = read_activations(tmp_path / "a.tsv")
    assert read.format == "tsv" and list(read.layers) == ["a"]
    np.testing.assert_array_equal(read.layers["a"], a)

    # pandas' to_csv: an unnamed row-index column first; dropped and said so.
    text = "," + ",".join(f"f{j}" for j in range(10)) + "\n"
    text += "".join(f"{i}," + ",".join(f"{v:.17g}" for v in row) + "\n" for i, row in enumerate(a))
    (tmp_path / "df.csv").write_text(text)
    read = read_activations(tmp_path / "df.csv")
    np.testing.assert_array_equal(read.layers["df"], a)
    assert read.skipped == ["column 1 (a row index)"] and read.format == "csv"

    # pandas' DataFrame(array).to_csv(): integer column labels, with or without the index.
    labels = ",".join(str(j) for j in range(10))
    rows = [",".join(f"{v:.17g}" for v in row) for row in a]
    for name, text, skipped in (
            ("pd.csv", labels + "\n" + "\n".join(rows), []),
            ("pdi.csv", "," + labels + "\n" + "\n".join(f"{i},{r}" for i, r in enumerate(rows)),
             ["column 1 (a row index)"])):
        (tmp_path / name).write_text(text + "\n")
        read = read_activations(tmp_path / name)
        np.testing.assert_array_equal(read.layers[name[:-4]], a)
        assert read.skipped == skipped
    # A first row of other numbers is a sample.
    (tmp_path / "n.csv").write_text("0,1,2,3,4,5,6,7,8,10\n" + "\n".join(rows) + "\n")
    assert read_activations(tmp_path / "n.csv").layers["n"].shape == (13, 10)

    # Semicolons with decimal commas; whitespace-separated .txt without a header.
    (tmp_path / "eu.csv").write_text("".join(";".join(f"{v:.6f}".replace(".", ",") for v in row)
                                             + "\n" for row in a))
    np.testing.assert_allclose(read_activations(tmp_path / "eu.csv").layers["eu"], a, atol=1e-6)
    np.savetxt(tmp_path / "w.txt", a)
    np.testing.assert_array_equal(read_activations(tmp_path / "w.txt").layers["w"], a)


def test_large_tables_go_through_a_temporary_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are collected block by block and spill to a mapped file once past a block."""
    monkeypatch.setattr(arrays, "BLOCK", 64)
    a = matrix(30, 11, 6)
    np.savetxt(tmp_path / "big.csv", a, delimiter=",")
    layer = read_activations(tmp_path / "big.csv").layers["big"]
    np.testing.assert_array_equal(layer, a)
    assert arrays.mapping(layer) is not None


def test_nan_and_inf_name_layer_count_and_place(tmp_path: Path) -> None:
    a = matrix(20, 12)
    a[4, 7], a[9, 0] = np.nan, -np.inf
    np.savez(tmp_path / "a.npz", ok=matrix(20, 12), bad=a)
    with pytest.raises(WeightDataError) as exc:
        read_activations(tmp_path / "a.npz")
    refused(exc, "a.npz", "layer 'bad'", "2 nan or inf values (1 nan, 1 inf)",
            "row 4, column 7", fix="replace or remove")

    rows = ["1,2,3,4,5,6,7,8,9,10"] * 12
    rows[5] = "1,2,nan,4,5,6,7,8,9,inf"
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(WeightDataError) as exc:
        read_activations(tmp_path / "a.csv")
    refused(exc, "2 nan or inf values (1 nan, 1 inf)", "line 6, column 3", fix="replace")


@pytest.mark.parametrize("shape,words", [
    ((MIN_SAMPLES - 1, 50), [f"{MIN_SAMPLES - 1} samples", "50 features"]),
    ((50, MIN_FEATURES - 1), ["50 samples", f"{MIN_FEATURES - 1} features"]),
    ((3, 2, 2), ["3 samples", "4 features"]),
])
def test_too_few_samples_or_features(tmp_path: Path, shape: tuple[int, ...],
                                     words: list[str]) -> None:
    np.save(tmp_path / "a.npy", np.ones(shape))
    with pytest.raises(WeightDataError) as exc:
        read_activations(tmp_path / "a.npy")
    refused(exc, *words, f"at least {MIN_SAMPLES} samples", f"at least {MIN_FEATURES} features",
            fix="transpose")
    # The smallest matrix that is enough.
    np.save(tmp_path / "b.npy", np.ones((MIN_SAMPLES, MIN_FEATURES)))
    assert read_activations(tmp_path / "b.npy").layers["b"].shape == (MIN_SAMPLES, MIN_FEATURES)


def test_vectors_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.arange(100.0))
    with pytest.raises(WeightDataError) as exc:
        read_activations(tmp_path / "v.npy")
    refused(exc, "v.npy", "one vector of 100 values", "(100,)", fix="(n_samples, n_features)")
    np.savez(tmp_path / "v.npz", x=np.arange(50.0), y=np.arange(50.0))
    with pytest.raises(WeightDataError) as exc:
        read_activations(tmp_path / "v.npz")
    refused(exc, "array 'x' (and 1 more)", "one vector", fix="(n_samples, n_features)")
    torch.save({"w": torch.zeros(5)}, tmp_path / "v.pt")
    with pytest.raises(WeightDataError) as exc:
        read_activations(tmp_path / "v.pt")
    refused(exc, "one vector", fix="2-D")


def test_bad_tables(tmp_path: Path) -> None:
    good = "0,1,2,3,4,5,6,7,8,9\n"
    cases = {
        "ragged.csv": ("h" + ",h" * 9 + "\n" + good * 11 + "0,1,2\n" + good,
                       ["line 13 has 3 values but line 1 has 10"], "same number of columns"),
        "cell.csv": (good * 3 + "0,1,2,x,4,5,6,7,8,9\n" + good * 8,
                     ["line 4, column 4", "'x'", "not a number"], "plain number"),
        "blank.csv": (good * 3 + "0,1,,3,4,5,6,7,8,9\n" + good * 8, ["line 4, column 3 is empty"],
                      "plain number"),
        "comments.csv": ("# nothing\n\n# here\n", ["empty"], "again"),
        "header.csv": ("a,b,c\n", ["only a header row"], "one row per sample"),
    }
    for name, (text, words, fix) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(WeightDataError) as exc:
            read_activations(tmp_path / name)
        refused(exc, name, *words, fix=fix)
    (tmp_path / "bin.csv").write_bytes(bytes(range(128, 256)))
    with pytest.raises(WeightDataError) as exc:
        read_activations(tmp_path / "bin.csv")
    refused(exc, "not utf-8", fix="plain-text csv")


def test_bad_files(tmp_path: Path) -> None:
    def check(name: str, data: bytes, *words: str, fix: str = "") -> None:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightDataError) as exc:
            read_activations(tmp_path / name)
        refused(exc, name, *words, fix=fix)

    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}] * 12] * 12, dtype=object),
            allow_pickle=True)
    check("objects.npy", (tmp_path / "obj.npy").read_bytes(), "python objects",
          "never unpickled")
    check("empty.npy", b"", "empty (0 bytes)", fix="upload the file again")
    check("a.xlsx", b"PK\x03\x04", "not recognised", fix="one row per sample")
    check("a.pkl", b"\x80\x04", "not recognised", fix="never loaded")
    np.save(tmp_path / "full.npy", matrix())
    full = (tmp_path / "full.npy").read_bytes()
    check("cut.npy", full[: len(full) // 2], "cut short", fix="complete file")
    np.savez(tmp_path / "full.npz", a=matrix())
    check("cut.npz", (tmp_path / "full.npz").read_bytes()[:200], "corrupt", fix="complete file")
    check("single.npz", full, "single .npy array saved under an .npz name", fix="layer1=")
    check("junk.pt", b"not a checkpoint at all", "could not be read as a pytorch checkpoint")
    check("empty_shape.npy", (lambda p: (np.save(p, np.zeros((0, 5))), p.read_bytes())[1])(
        tmp_path / "z.npy"), "empty array")
    np.savez(tmp_path / "ints.npz", a=np.ones((20, 20), dtype=np.int32))
    check("ints.npz", (tmp_path / "ints.npz").read_bytes(),
          "no floating-point array", "a (20, 20) not float", fix="float array")
    torch.save({"h": torch.randn(20, 20), "args": argparse.Namespace(lr=0.1)}, tmp_path / "p")
    check("pickle.pt", (tmp_path / "p").read_bytes(), "pickled python objects",
          "argparse.namespace", "never unpickled")
    with pytest.raises(WeightDataError) as exc:
        read_activations([tmp_path / "full.npy", tmp_path / "full.npy"])
    refused(exc, "2 files", fix="one file")


def test_archive_over_the_uncompressed_limit(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "z.npz", a=np.zeros((1000, 100)))
    with pytest.raises(UploadTooLargeError) as exc:
        read_activations(tmp_path / "z.npz", max_uncompressed=100_000)
    assert exc.value.status == 413
    refused(exc, "inflates to", "100,000 bytes", fix="upload less data")
    assert read_activations(tmp_path / "z.npz", max_uncompressed=10**6).layers["a"].shape == \
        (1000, 100)


# ----------------------------------------------------------------------------- checkpoints


def cnn_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv1.weight": torch.randn(8, 3, 3, 3, generator=g),
        "conv1.bias": torch.randn(8, generator=g),
        "bn1.weight": torch.rand(8, generator=g),
        "bn1.running_var": torch.rand(8, generator=g),
        "conv1d.weight": torch.randn(6, 4, 5, generator=g),
        "depthwise.weight": torch.randn(8, 1, 3, 3, generator=g),
        "fc.weight": torch.randn(10, 72, generator=g),
        "fc.bias": torch.randn(10, generator=g),
        "head.weight": torch.randn(1, 10, generator=g),
        "layer_norm.weight": torch.randn(10, generator=g),
    }


def test_torch_checkpoint_conv_reshape_and_skipped(tmp_path: Path) -> None:
    state = cnn_state()
    torch.save({"model": {f"module._orig_mod.{k}": v for k, v in state.items()}, "epoch": 3},
               tmp_path / "ckpt.pt")
    read = read_checkpoint(tmp_path / "ckpt.pt")
    assert read.format == "torch"
    assert list(read.layers) == ["conv1.weight", "conv1d.weight", "depthwise.weight",
                                 "fc.weight"]
    for key, layer in read.layers.items():
        w = state[key].numpy()
        np.testing.assert_array_equal(layer, w.reshape(w.shape[0], -1).astype(np.float64))
        assert read.shapes[key] == list(w.shape)
    assert read.reshaped == {
        "conv1.weight": "conv weight (8, 3, 3, 3) read as 8 × 27 (out × in·kh·kw)",
        "conv1d.weight": "conv weight (6, 4, 5) read as 6 × 20 (out × in·k)",
        "depthwise.weight": "conv weight (8, 1, 3, 3) read as 8 × 9 (out × in·kh·kw)",
    }
    assert set(read.skipped) == {"conv1.bias", "bn1.weight", "bn1.running_var", "fc.bias",
                                 "head.weight", "layer_norm.weight"}
    assert read.summary()["layers"][0]["reshaped"] == read.reshaped["conv1.weight"]


def test_safetensors_and_npz_checkpoints(tmp_path: Path) -> None:
    state = {k: v.double() for k, v in cnn_state(1).items()}  # float64: read in place
    save_torch_file(state, str(tmp_path / "m.safetensors"))
    np.savez(tmp_path / "m.npz", **{k: v.numpy() for k, v in state.items()})
    for name in ("m.safetensors", "m.npz"):
        read = read_checkpoint([tmp_path / name])
        assert read.format == name.split(".")[1]
        assert list(read.layers) == ["conv1.weight", "conv1d.weight", "depthwise.weight",
                                     "fc.weight"]
        w = state["conv1.weight"].numpy()
        np.testing.assert_array_equal(read.layers["conv1.weight"], w.reshape(8, -1))
        assert arrays.mapping(read.layers["fc.weight"]) is not None  # memory-mapped


def test_include_all_keeps_every_matrix(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(2)
    state = {"fc.weight": torch.randn(12, 20, generator=g),
             "norm.scale": torch.randn(12, 12, generator=g),
             "norm.bias": torch.randn(12, generator=g),
             "mask": torch.ones(12, 12, dtype=torch.bool)}
    torch.save(state, tmp_path / "m.pt")
    assert list(read_checkpoint(tmp_path / "m.pt").layers) == ["fc.weight"]
    read = read_checkpoint(tmp_path / "m.pt", include_all=True)
    assert list(read.layers) == ["fc.weight", "norm.scale"]
    assert read.skipped == ["norm.bias", "mask"]
    # read_matrices picks the reader; include_all only matters for checkpoints.
    assert list(read_matrices([tmp_path / "m.pt"], "checkpoint", include_all=True).layers) == \
        ["fc.weight", "norm.scale"]
    assert list(read_matrices([tmp_path / "m.pt"], "activations").layers) == \
        ["fc.weight", "norm.scale"]
    with pytest.raises(ValueError, match="want must be"):
        read_matrices([tmp_path / "m.pt"], "pairs")


def test_bad_checkpoints(tmp_path: Path) -> None:
    def check(name: str, *words: str, fix: str = "", **kwargs: bool) -> None:
        with pytest.raises(WeightDataError) as exc:
            read_checkpoint(tmp_path / name, **kwargs)
        refused(exc, name, *words, fix=fix)

    torch.save({"fc.weight": torch.full((4, 6), float("inf")), "b": torch.zeros(3)},
               tmp_path / "inf.pt")
    check("inf.pt", "layer 'fc.weight'", "24 nan or inf values (0 nan, 24 inf)",
          "row 0, column 0", fix="diverge")
    torch.save({"fc.bias": torch.zeros(3), "readout.weight": torch.zeros(1, 5)},
               tmp_path / "none.pt")
    check("none.pt", "no weight matrix", "fc.bias, readout.weight", fix="include_all")
    check("none.pt", "no weight matrix", include_all=True)
    torch.save({"fc.weight": torch.randn(4, 4), "opt": argparse.Namespace()}, tmp_path / "p.pt")
    check("p.pt", "pickled python objects", "never unpickled", fix="state_dict")
    torch.save(torch.randn(4, 4), tmp_path / "bare.pt")
    check("bare.pt", "holds a tensor", "not a state dict", fix="state_dict")
    np.save(tmp_path / "w.npy", matrix())
    check("w.npy", "not a model checkpoint", fix="activations")
    (tmp_path / "w.csv").write_text("1,2\n3,4\n")
    check("w.csv", "text table", "not a model checkpoint")
    (tmp_path / "w.h5").write_bytes(b"\x89HDF")
    check("w.h5", "not recognised", fix="np.savez")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    check("empty.npz", "holds no tensors")


# ----------------------------------------------------------------------------- around it


def test_dataset_problems_name_what_is_held() -> None:
    assert MATRIX_FORMATS == ("activations", "checkpoint")
    assert matrices_dataset_problem("ds_a", "activations", "activations") is None
    problem, fix = matrices_dataset_problem("ds_a", "checkpoint", "activations")
    assert "ds_a" in problem and "checkpoint's weight matrices, not activation" in problem
    assert "/api/datasets/activations" in fix
    problem, fix = matrices_dataset_problem("ds_a", "csv", "checkpoint")
    assert "weights before and after learning (format csv)" in problem
    assert "/api/datasets/checkpoint" in fix
    problem, _ = matrices_dataset_problem("ds_a", "distribution", "checkpoint")
    assert "one distribution" in problem
    with pytest.raises(ValueError):
        matrices_dataset_problem("ds_a", "csv", "pairs")
    for fmt in MATRIX_FORMATS:
        problem, fix = pairs_dataset_problem("ds_b", fmt)
        assert "not weights before and after" in problem and "POST /api/datasets" in fix
        problem, fix = distribution_dataset_problem("ds_b", fmt)
        assert "not a single distribution" in problem and "distribution" in fix
    assert pairs_dataset_problem("ds_b", "npz") is None


def test_sizes_for_cost_estimates_are_rows_then_columns() -> None:
    summary = NamedMatrices(layers={"a": np.zeros((30, 12)), "b": np.zeros((8, 27))},
                            format="npz").summary()
    record = SimpleNamespace(format="checkpoint", summary=summary, n_pairs=30 * 12 + 8 * 27)
    assert dataset_sizes(record) == [30, 12, 8, 27]
    pairs = SimpleNamespace(format="npz", summary={"layers": [{"n": 5}, {"n": 7}]}, n_pairs=12)
    assert dataset_sizes(pairs) == [5, 7]


def test_local_and_recording_contexts_read_files(tmp_path: Path) -> None:
    a = matrix(20, 15)
    np.save(tmp_path / "feats.npy", a)
    torch.save(cnn_state(), tmp_path / "m.pt")
    for ctx in (LocalContext(), RecordingContext()):
        np.testing.assert_array_equal(
            ctx.load_matrices(str(tmp_path / "feats.npy"), "activations").layers["feats"], a)
        read = ctx.load_matrices(str(tmp_path / "m.pt"), "checkpoint")
        assert "conv1.weight" in read.layers and "bn1.weight" in read.skipped
        with pytest.raises(WeightDataError, match="not a model checkpoint"):
            ctx.load_matrices(str(tmp_path / "feats.npy"), "checkpoint")
