"""The upload panel of a spec field that takes activation matrices or a checkpoint
(`"x-upload": "activations"` / `"checkpoint"`, frontend/static/js/matrices.js), in headless
Chromium against a real API server and PostgreSQL. The panel is attached to a plain text
field here, as the form does for such a field.

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.browser.support import new_page

pytestmark = [pytest.mark.browser, pytest.mark.services]

ATTACH = """async () => {
  const { attachMatrixUpload } = await import("/static/js/matrices.js");
  window.panels = {};
  for (const want of ["activations", "checkpoint"]) {
    const node = document.createElement("div");
    const control = document.createElement("input");
    control.type = "text";
    control.id = `field-${want}`;
    node.append(control);
    document.body.prepend(node);
    const field = { node, control, set: (v) => { control.value = v; }, clearError: () => {} };
    window.panels[want] = attachMatrixUpload(field, want);
  }
}"""


def test_activation_and_checkpoint_panels(browser, stack_env, api_server_factory,
                                          tmp_path: Path, page_errors: list[str]) -> None:
    api = api_server_factory(stack_env)
    rng = np.random.default_rng(0)
    good = tmp_path / "layers.npz"
    np.savez(good, block1=rng.standard_normal((40, 16)),
             block2=rng.standard_normal((40, 4, 3, 3)).astype(np.float32))
    vector = tmp_path / "vector.npy"
    np.save(vector, np.arange(50.0))
    model = tmp_path / "model.pt"
    torch.save({"conv.weight": torch.randn(8, 3, 3, 3), "conv.bias": torch.randn(8),
                "fc.weight": torch.randn(10, 72)}, model)

    # The refused 1-D file answers 422 on purpose.
    context, page = new_page(browser, page_errors,
                             expected_failures=("/api/datasets/activations",))
    try:
        page.goto(f"{api.url}/new")
        page.evaluate(ATTACH)
        field = page.locator("#field-activations")

        # A refused file: the server's problem and fix, and the field stays empty.
        page.set_input_files("#field-activations-file", str(vector))
        error = page.locator("#field-activations-upload-error")
        error.wait_for(state="visible")
        text = error.inner_text()
        assert "vector.npy" in text and "one vector of 50 values" in text, text
        assert "(n_samples, n_features)" in text, text
        assert field.input_value() == ""

        # An accepted file: its layers, and the field holds the dataset id.
        page.set_input_files("#field-activations-file", str(good))
        page.wait_for_function(
            "() => document.getElementById('field-activations').value.startsWith('ds_')")
        assert error.is_hidden()
        table = page.locator("#field-activations-layers")
        table.wait_for()
        rows = table.locator("tbody tr").all_inner_texts()
        assert len(rows) == 2 and "block1" in rows[0] and "40 × 16" in rows[0], rows
        assert "block2" in rows[1] and "40 × 36" in rows[1], rows
        assert "read as 40 × 36" in rows[1], rows
        text = page.locator("#field-activations-summary").inner_text()
        assert "left out" not in text and "null" not in text, text
        activations_id = field.input_value()

        # A checkpoint: conv read as out × in·kh·kw, the bias listed as left out.
        page.set_input_files("#field-checkpoint-file", str(model))
        page.wait_for_function(
            "() => document.getElementById('field-checkpoint').value.startsWith('ds_')")
        summary = page.locator("#field-checkpoint-summary")
        text = summary.inner_text()
        assert "conv weight (8, 3, 3, 3) read as 8 × 27 (out × in·kh·kw)" in text, text
        assert "1 entry left out" in text, text

        # The checkpoint field given the activations' id says it cannot read it.
        page.fill("#field-checkpoint", activations_id)
        page.evaluate("() => window.panels.checkpoint.refresh()")
        error = page.locator("#field-checkpoint-upload-error")
        error.wait_for(state="visible")
        assert "does not hold one model checkpoint" in error.inner_text()
        assert summary.is_hidden()
    finally:
        context.close()
    assert not page_errors, page_errors
