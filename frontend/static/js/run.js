// /runs/{id}: live status (polled every second until the run ends), cancel, share, result.

import { api, ApiError, clearError, el, fmtDate, showError, showVersion, TERMINAL } from "./api.js";
import { showHeader, showOutcome, showProgress, showProvenance, showResult } from "./runview.js";

const $ = (id) => document.getElementById(id);
const runId = decodeURIComponent(location.pathname.replace(/\/+$/, "").split("/").pop() || "");
const POLL_MS = 1000;

let failures = 0;
let linksListed = false;

async function fetchResult(run) {
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      return await api(`/api/runs/${encodeURIComponent(run.id)}/result`);
    } catch (err) {
      // 409 right after the status flipped: the result may be a moment behind.
      if (!(err instanceof ApiError) || err.status !== 409) throw err;
      await new Promise((r) => setTimeout(r, 700));
    }
  }
  throw new ApiError(409, "The run succeeded but its result is not available yet.", "Reload the page in a moment.");
}

async function update(run) {
  await showHeader(run);
  showProgress(run);
  showOutcome(run);
  showProvenance(run);
  $("cancel-btn").hidden = TERMINAL.has(run.status);
  $("delete-btn").hidden = !TERMINAL.has(run.status);
  $("share-btn").hidden = false;
  $("share-expiry-label").hidden = false;
  if (!linksListed) {
    linksListed = true;
    showShareLinks().catch(() => null); // links made earlier, to revoke them
  }
  if (run.status === "succeeded") {
    try {
      showResult(run, await fetchResult(run));
    } catch (err) {
      showError($("page-error"), err, "Could not load the result.");
    }
  }
}

async function poll() {
  try {
    const run = await api(`/api/runs/${encodeURIComponent(runId)}`);
    failures = 0;
    clearError($("page-error"));
    await update(run);
    if (!TERMINAL.has(run.status)) setTimeout(poll, POLL_MS);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      // In the user's words (the API's fix names an endpoint), with the way back.
      $("run-title").textContent = "Run not found";
      $("run-sub").textContent = "";
      const box = $("page-error");
      box.replaceChildren(
        el("p", { class: "problem", style: "margin:0" }, "There is no run at this address: it was deleted, or the link is mistyped."),
        el("p", { class: "fix" }, el("a", { href: "/" }, "Go to the home page"), " to see your runs."),
      );
      box.hidden = false;
      return;
    }
    failures += 1;
    showError($("page-error"), err, failures > 1 ? `Lost contact with the server (${failures} tries); still trying.` : "Lost contact with the server; still trying.");
    setTimeout(poll, Math.min(POLL_MS * 2 ** failures, 15000));
  }
}

$("cancel-btn").addEventListener("click", async () => {
  const button = $("cancel-btn");
  button.disabled = true;
  button.textContent = "Cancelling…";
  try {
    const run = await api(`/api/runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" });
    clearError($("page-error"));
    await update(run);
  } catch (err) {
    showError($("page-error"), err, "Could not cancel the run.");
  } finally {
    button.disabled = false;
    button.textContent = "Cancel run";
  }
});

$("delete-btn").addEventListener("click", async () => {
  if (!window.confirm("Delete this run, its result and its share links? This cannot be undone.")) return;
  const button = $("delete-btn");
  button.disabled = true;
  try {
    await api(`/api/runs/${encodeURIComponent(runId)}`, { method: "DELETE" });
    location.assign("/");
  } catch (err) {
    button.disabled = false;
    showError($("page-error"), err, "Could not delete the run.");
  }
});

async function copyText(input) {
  const text = input.value;
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API needs a secure context and permission; fall back to a selection copy.
    input.focus();
    input.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
}

$("share-btn").addEventListener("click", async () => {
  const button = $("share-btn");
  const status = $("share-status");
  button.disabled = true;
  try {
    const days = $("share-expiry").value;
    const share = await api(`/api/runs/${encodeURIComponent(runId)}/share`, {
      method: "POST",
      body: { expires_in_days: days ? Number(days) : null },
    });
    const url = share.url || new URL(`/s/${share.token}`, location.origin).href;
    const input = $("share-url");
    input.value = url;
    $("share-panel").hidden = false;
    $("share-open").href = url;
    const copied = await copyText(input);
    input.select();
    status.textContent = copied ? "Link copied to the clipboard." : "Copy the link above (the browser did not allow clipboard access).";
    await showShareLinks();
  } catch (err) {
    showError($("page-error"), err, "Could not create a share link.");
  } finally {
    button.disabled = false;
  }
});

function linkState(link) {
  if (link.revoked_at) return `revoked ${fmtDate(link.revoked_at)}`;
  if (!link.active) return `expired ${fmtDate(link.expires_at)}`;
  return link.expires_at ? `works until ${fmtDate(link.expires_at)}` : "works until revoked";
}

/** The run's links, each with its state and (while it works) a Revoke button. */
async function showShareLinks() {
  const links = await api(`/api/runs/${encodeURIComponent(runId)}/shares`);
  $("share-links").replaceChildren(...links.map((link) => {
    const item = el("li", { "data-share-id": link.id }, `Made ${fmtDate(link.created_at)} · ${linkState(link)} `);
    if (link.active) {
      const revoke = el("button", { type: "button", class: "btn btn-small btn-danger" }, "Revoke");
      revoke.addEventListener("click", async () => {
        revoke.disabled = true;
        try {
          await api(`/api/runs/${encodeURIComponent(runId)}/shares/${encodeURIComponent(link.id)}`, { method: "DELETE" });
          $("share-status").textContent = "Link revoked: it no longer opens this run.";
          await showShareLinks();
        } catch (err) {
          revoke.disabled = false;
          showError($("page-error"), err, "Could not revoke the link.");
        }
      });
      item.append(revoke);
    }
    return item;
  }));
  // The panel opens with earlier links too; the link box only once a link was made here.
  $("share-url").closest(".share-box").hidden = !$("share-url").value;
  if (links.length) $("share-panel").hidden = false;
}

$("share-copy").addEventListener("click", async () => {
  const copied = await copyText($("share-url"));
  $("share-status").textContent = copied ? "Link copied to the clipboard." : "Select the link and copy it.";
});

showVersion();
if (!runId) {
  showError($("page-error"), new Error("No run id in the address."), "Open a run from the home page.");
} else {
  poll();
}
