"""The `syngeo` command line, in-process (CliRunner) and once as the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from syngeo.cli import app
from tests.test_api import csv_bytes, ne_pairs

runner = CliRunner()


def pnorm_pairs(p: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Appendix B.2 with a p-norm: Gaussian start, Gaussian change in the dual space."""
    rng = np.random.default_rng(seed)
    d = 100
    w0 = rng.normal(0, 1 / np.sqrt(d), n)
    grad = lambda w: np.sign(w) * np.abs(w) ** (p - 1)  # noqa: E731
    z = grad(w0) + 0.1 * grad(1 / np.sqrt(d)) * rng.standard_normal(n)
    return w0, np.sign(z) * np.abs(z) ** (1 / (p - 1))


def test_analyze_csv_json(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_bytes(csv_bytes(*ne_pairs(20000)))  # p = 1.1 ties NE on fewer
    result = runner.invoke(app, ["analyze", "geometry", str(path), "--json", "--bootstrap", "50"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["best"]["family"] == "negative_entropy" and body["best"]["p"] is None
    assert len(body["candidates"]) == 21
    first, last = body["candidates"][0], body["candidates"][10]
    assert {"family", "p", "delta_cdf", "delta_cdf_ci", "p_value", "fits", "dual_change"} \
        <= set(first)
    # The true potential: consistent with a Gaussian, so no interval (its population value
    # is 0) but a test; p = 2 is far off: ruled out, with an interval well above NE's score.
    assert first["fits"] is True and first["delta_cdf_ci"] is None and first["ci_note"]
    assert last["fits"] is False and last["p_value_bounded"] is True  # beyond the null table
    assert last["delta_cdf_ci"][0] > 10 * first["delta_cdf"]
    assert body["headline"] == body["verdict"]["text"]


def test_analyze_two_npy_table_and_grid(tmp_path: Path) -> None:
    before, after = pnorm_pairs(2.0)
    np.save(tmp_path / "before.npy", before)
    np.save(tmp_path / "after.npy", after)
    args = ["analyze", "geometry", str(tmp_path / "before.npy"), str(tmp_path / "after.npy"),
            "--potentials", "ne,p1.5,p2,p3", "--bootstrap", "0"]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "p = 2 ◀ best" in table.stdout
    grid = json.loads(runner.invoke(app, [*args, "--grid", "--json"]).stdout)
    assert grid["method"] == "grid" and grid["best"] == {"family": "p_norm", "p": 2.0,
                                                         "label": "p = 2", "key": "p2"}
    # The conclusion comes first (wrapped to the terminal's width), and --json carries it.
    assert " ".join(table.stdout.split()).startswith(" ".join(grid["conclusion"].split()[:6]))
    assert grid["conclusion"] == grid["headline"]


def test_analyze_bad_input_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "w.csv"
    path.write_text("before,after\n0.1,0.2\nnan,0.3\n")
    result = runner.invoke(app, ["analyze", "geometry", str(path)])
    assert result.exit_code == 2
    assert "nan" in result.output.lower()
    bad_potential = runner.invoke(app, ["analyze", "geometry", str(path), "--potentials", "q"])
    assert bad_potential.exit_code == 2 and "unknown potential" in bad_potential.output


def test_kinds_spec_and_run(tmp_path: Path) -> None:
    assert "geometry" in runner.invoke(app, ["kinds"]).stdout
    template = yaml.safe_load(runner.invoke(app, ["spec", "geometry"]).stdout)
    assert template["kind"] == "geometry" and template["spec"]["bootstrap"] == 200
    assert runner.invoke(app, ["spec", "nope"]).exit_code == 2

    (tmp_path / "w.csv").write_bytes(csv_bytes(*ne_pairs(3000)))
    spec = {**template, "spec": {**template["spec"], "dataset": "w.csv", "bootstrap": 20,
                                 "potentials": ["ne", "p2"]}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["run", str(tmp_path / "spec.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["summary"]["best"]["family"] == "negative_entropy"
    assert isinstance(body["spec"]["seed"], int)

    # NaN (YAML's .nan) is named as not a finite number, not as "out of bounds".
    (tmp_path / "nan.yaml").write_text(yaml.safe_dump(spec).replace(
        "confidence: 0.95", "confidence: .nan"))
    refused = runner.invoke(app, ["run", str(tmp_path / "nan.yaml")])
    assert refused.exit_code != 0 and "finite number" in refused.output, refused.output


def test_run_spine_fit_from_a_spec_file(tmp_path: Path) -> None:
    """A one-string dataset stays one string: a file next to the spec, else as written
    ('example', an uploaded dataset's id)."""
    from tests.test_distribution_upload import column_csv, volumes

    (tmp_path / "volumes.csv").write_bytes(column_csv(volumes(300)))
    for dataset, source, n in (("volumes.csv", "volumes.csv", 300), ("example", "example", 1961)):
        spec = {"kind": "spine_fit", "spec": {"dataset": dataset, "potentials": ["ne"],
                                              "init_models": ["point_masses"]}}
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        result = runner.invoke(app, ["run", str(tmp_path / "spec.yaml"), "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)["summary"]
        assert summary["dataset"]["source"] == source and summary["dataset"]["n"] == n
        assert summary["conclusion"].startswith("Negative entropy with 2 point masses fits")
    human = runner.invoke(app, ["run", str(tmp_path / "spec.yaml")])
    assert human.exit_code == 0, human.output
    assert human.stdout.startswith("Negative entropy with 2 point masses fits best by BIC")


def test_console_script_is_installed() -> None:
    script = shutil.which("syngeo") or str(Path(__file__).parents[1] / ".venv/bin/syngeo")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "analyze" in done.stdout


@pytest.mark.parametrize("kind", ["curl_two_neuron", "curl_spectrum", "curl_single_run",
                                  "curl_convergence"])
def test_each_curl_view_runs_again_from_its_printed_spec(kind: str, tmp_path: Path) -> None:
    """The CLI prints the full spec (seed filled in); that spec, run again, gives the same
    result."""
    from syngeo.examples import QUICK_SPECS

    first_file = tmp_path / "first.json"
    first_file.write_text(json.dumps({"kind": kind, "spec": QUICK_SPECS[kind]}))
    first = runner.invoke(app, ["run", str(first_file), "--json"])
    assert first.exit_code == 0, first.output
    printed = json.loads(first.stdout)
    again_file = tmp_path / "again.json"
    again_file.write_text(json.dumps({"kind": kind, "spec": printed["spec"]}))
    again = runner.invoke(app, ["run", str(again_file), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["summary"] == printed["summary"]
    assert printed["summary"]["conclusion"].endswith(".")
