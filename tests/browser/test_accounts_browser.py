"""Multi-user mode in the browser: the login page, a private run, a share link that its
owner revokes and that then stops working."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.browser.support import new_page, wait_for_run_to_succeed


def test_login_run_share_and_revoke(browser, stack_env, api_server_factory,
                                    celery_worker_factory, page_errors: list[str]) -> None:
    env = {**stack_env, "SYNGEO_AUTH": "1"}
    api = api_server_factory(env)
    worker = celery_worker_factory(env)
    made = subprocess.run([sys.executable, "-m", "syngeo.cli", "users", "add", "alice"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]

    # Before logging in (and with a wrong token) the API answers 401 on purpose.
    context, page = new_page(browser, page_errors,
                             expected_failures=("/api/me", "/api/session"))
    try:
        page.goto(f"{api.url}/analyze")
        page.wait_for_url("**/login?next=%2Fanalyze")  # no token yet: the login page
        page.fill("#token", "not-the-token")
        page.get_by_role("button", name="Log in").click()
        page.locator("#page-error").wait_for(state="visible")
        assert "not valid" in page.locator("#page-error").inner_text()
        page.fill("#token", token)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/analyze")
        page.get_by_role("button", name="Load example").click()
        page.locator("#dataset-summary").wait_for(state="visible")
        page.locator("#advanced > summary").click()
        page.fill("#opt-bootstrap", "30")
        page.get_by_role("button", name="Run analysis").click()
        page.wait_for_url("**/runs/*")
        wait_for_run_to_succeed(page, api, worker)
        assert page.locator("#account-name").inner_text() == "alice"

        page.locator("#share-expiry").select_option("7")
        page.get_by_role("button", name="Copy share link").click()
        page.wait_for_function("() => document.querySelector('#share-url').value.length > 0")
        share_url = page.input_value("#share-url")
        links = page.locator("#share-links li")
        links.first.wait_for()
        assert "works until" in links.first.inner_text()
        links.first.get_by_role("button", name="Revoke").click()
        page.wait_for_function(
            "() => document.querySelector('#share-links li')?.textContent.includes('revoked')")

        # The revoked link, opened by anyone: not valid, and nothing to act with.
        other, shared = new_page(browser, page_errors, expected_failures=("/api/share/",))
        try:
            shared.goto(share_url)
            shared.locator("#page-error").wait_for(state="visible")
            assert "revoked or has expired" in shared.locator("#page-error").inner_text()
            assert "/s/" in shared.url  # not sent to the login page
            assert shared.get_by_role("button", name="Cancel run").count() == 0
        finally:
            other.close()

        # The owner deletes the run, then the dataset (each after a confirmation).
        page.on("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Delete run").click()
        page.wait_for_url(f"{api.url}/")
        page.locator("#runs .empty").wait_for()
        page.locator("#datasets-table").get_by_role("button", name="Delete").click()
        page.locator("#datasets .empty").wait_for()
    finally:
        context.close()
    assert not page_errors, page_errors

