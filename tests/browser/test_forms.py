"""The generated run forms in the user's words: labels from the spec's titles, fields that do
not apply greyed out and left out of the spec, and multiple choices as checkboxes, in headless
Chromium against a real API server (embedded default: SQLite and the filesystem broker; no
worker is needed, nothing runs).

Fixtures: tests/browser/conftest.py.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser.support import new_page

pytestmark = [pytest.mark.browser, pytest.mark.services]

TRAINING_ONLY = ("lr_min", "lr_max", "lr_points", "epochs", "epochs_step", "max_epochs",
                 "mse_target")


@pytest.fixture
def api(api_server_factory, tmp_path):
    return api_server_factory({"SYNGEO_DATA_DIR": str(tmp_path / "data")})


def _submitted_spec(page) -> dict:
    """Start the run and return the spec the page sent."""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/runs")) as sent:
        page.get_by_role("button", name="Start run").click()
    page.wait_for_url("**/runs/*")
    return sent.value.post_data_json["spec"]


def test_labels_are_titles_and_training_fields_follow_the_solver(
        browser, api, page_errors: list[str]) -> None:
    keys = httpx.get(f"{api.url}/api/kinds", timeout=10).json()
    keys = next(k for k in keys if k["name"] == "linear_regression")["schema"]["properties"]
    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/new/linear_regression")
        page.locator("#spec-lr_min").wait_for()

        # Labels are written for people, not made from the field names ("Lr min").
        assert page.locator("label[for=spec-lr_min]").inner_text() == "Smallest learning rate"
        assert page.locator("label[for=spec-mse_target]").inner_text() == "Target training MSE"
        labels = {t.strip().lower() for t in page.locator("#spec-fields label").all_inner_texts()}
        assert not labels & {key.replace("_", " ") for key in keys}, labels
        assert "/api/" not in page.locator("#spec-fields").inner_text()

        # The exact solver trains nothing: the training fields are disabled and say why.
        assert page.input_value("#spec-solver") == '"exact"'
        for key in TRAINING_ONLY:
            assert page.locator(f"#spec-{key}").is_disabled(), key
        note = page.locator("[data-field=lr_min] .applies-note")
        assert note.inner_text() == "Only used when regression solver is “training (appendix B.1)”."

        page.select_option("#spec-solver", value='"training"')
        for key in TRAINING_ONLY:
            assert page.locator(f"#spec-{key}").is_enabled(), key
        assert note.is_hidden()
        page.fill("#spec-lr_points", "4")

        # Back to exact: the changed value is kept on the page but not sent.
        page.select_option("#spec-solver", value='"exact"')
        assert page.locator("#spec-lr_points").is_disabled()
        spec = _submitted_spec(page)
        assert spec["solver"] == "exact"
        assert not set(TRAINING_ONLY) & set(spec), spec
    finally:
        context.close()
    assert not page_errors, page_errors


def test_multiple_choices_are_checkboxes(browser, api, page_errors: list[str]) -> None:
    context, page = new_page(browser, page_errors)
    try:
        page.goto(f"{api.url}/new/spine_fit")
        group = page.locator("fieldset#spec-init_models")
        group.wait_for()
        assert group.locator("legend").inner_text() == "Models of the initial weights w0"
        masses = group.locator("input[type=checkbox][value='\"point_masses\"']")
        lognormal = group.locator("input[type=checkbox][value='\"point_mass_lognormal\"']")
        assert masses.is_checked() and lognormal.is_checked()  # the default: both

        # A plain click unticks a box; the number of point masses then does not apply.
        # Choices read in words: "point masses", not "point_masses".
        group.get_by_text("point masses", exact=True).click()
        assert not masses.is_checked() and lognormal.is_checked()
        assert page.locator("#spec-n_components").is_disabled()
        assert "Only used when “point masses” is among" in \
            page.locator("[data-field=n_components] .applies-note").inner_text()

        # The keyboard ticks it again; a click unticks the other.
        masses.focus()
        page.keyboard.press("Space")
        assert masses.is_checked()
        assert page.locator("#spec-n_components").is_enabled()
        lognormal.click()
        assert not lognormal.is_checked()

        spec = _submitted_spec(page)
        assert spec["init_models"] == ["point_masses"]
        assert spec["n_components"] == 2
    finally:
        context.close()
    assert not page_errors, page_errors
