// /s/{token}: the read-only view of a shared run. No login, no controls that change anything.

import { api, ApiError, clearError, showError, showVersion, TERMINAL } from "./api.js";
import { showHeader, showOutcome, showProgress, showProvenance, showResult } from "./runview.js";

const $ = (id) => document.getElementById(id);
const token = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop() || "");
const POLL_MS = 2000;
let failures = 0;

async function poll() {
  try {
    const shared = await api(`/api/share/${encodeURIComponent(token)}`);
    failures = 0;
    clearError($("page-error"));
    const run = shared.run;
    await showHeader(run);
    showProgress(run);
    showOutcome(run);
    showProvenance(run);
    let pending = !TERMINAL.has(run.status); // a shared run that is still going: keep watching
    if (run.status === "succeeded" && shared.result_url) {
      try {
        showResult(run, await api(shared.result_url));
      } catch (err) {
        // 409 right after the status flipped: the result may be a moment behind.
        if (!(err instanceof ApiError) || err.status !== 409) throw err;
        pending = true;
      }
    }
    if (pending) setTimeout(poll, POLL_MS);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      $("run-title").textContent = "Shared result not found";
      $("run-sub").textContent = "";
      showError($("page-error"), err, "This share link is not valid.");
      return;
    }
    failures += 1;
    showError($("page-error"), err, "Lost contact with the server; still trying.");
    setTimeout(poll, Math.min(POLL_MS * 2 ** failures, 20000));
  }
}

showVersion();
poll();
