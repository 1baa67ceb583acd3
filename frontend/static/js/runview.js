// The parts of a run view shared by the run page and the share page: header, progress,
// failure text, result and provenance. `showRun` is idempotent: call it on every poll.

import { api, el, fmtDuration, fmtRelative, runDuration, shortId, statusBadge, TERMINAL } from "./api.js";
import { renderProvenance, renderResult, runTitle } from "./result.js";

const $ = (id) => document.getElementById(id);

let datasetNameFor = null;

async function datasetLabel(run) {
  if (run.inputs) return run.inputs.length ? run.inputs.map((i) => i.name).join(" + ") : null; // shared view
  const id = run.spec && run.spec.dataset;
  if (id === "example") return "bundled example";
  // Only stored datasets have a record to ask for (ids "ds_…"; a CLI run may name a file).
  if (typeof id !== "string" || !id.startsWith("ds_")) return null;
  if (datasetNameFor && datasetNameFor.id === id) return datasetNameFor.label;
  datasetNameFor = { id, label: null };
  try {
    const ds = await api(`/api/datasets/${encodeURIComponent(id)}`);
    datasetNameFor.label = ds && ds.name ? ds.name : null;
  } catch {
    /* a shared run may outlive its dataset listing; the id is enough */
  }
  return datasetNameFor.label;
}

let kindTitles = null;

/** The kind's title from /api/kinds (read once per page; geometry has its own wording). */
async function kindTitle(run) {
  if (run.kind === "geometry") return null;
  if (!kindTitles) {
    kindTitles = api("/api/kinds")
      .then((kinds) => new Map((kinds || []).map((k) => [k.name, k.title])))
      .catch(() => new Map());
  }
  return (await kindTitles).get(run.kind) || null;
}

/** On the run page (not the read-only share page): start a new run from this one's spec. */
function offerRerun(run) {
  const actions = document.querySelector(".page-head .actions");
  if (run.kind === "geometry" || !$("cancel-btn") || !actions || $("rerun-link")) return;
  actions.append(el("a", {
    class: "btn", id: "rerun-link",
    href: `/new/${encodeURIComponent(run.kind)}?from=${encodeURIComponent(run.id)}`,
  }, "New run from these settings"));
}

export async function showHeader(run) {
  const title = runTitle(run, await kindTitle(run));
  document.title = `${title}${run.id ? ` ${shortId(run.id)}` : ""} · Synaptic Geometry Lab`;
  $("run-title").textContent = `${title} `;
  offerRerun(run);
  const badge = $("run-status");
  // Replace the badge only when the status changes: it is a live region.
  if (badge.dataset.status !== run.status) {
    badge.dataset.status = run.status;
    badge.replaceChildren(statusBadge(run.status));
  }
  const crumb = $("run-id-short");
  if (crumb && run.id) crumb.textContent = shortId(run.id);
  const sub = $("run-sub");
  const bits = [];
  const name = await datasetLabel(run);
  if (name) bits.push(`Dataset “${name}”`);
  else if (run.id && run.spec && run.spec.dataset) bits.push(`Dataset ${shortId(run.spec.dataset)}`);
  if (run.kind !== "geometry" && run.spec && run.spec.seed !== undefined && run.spec.seed !== null) bits.push(`seed ${run.spec.seed}`);
  bits.push(`created ${fmtRelative(run.created_at)}`);
  const d = runDuration(run);
  if (d !== null) bits.push(`${TERMINAL.has(run.status) ? "ran" : "running for"} ${fmtDuration(d)}`);
  sub.textContent = bits.join(" · ");
}

// A remaining-time estimate needs some progress to extrapolate from: before 3 % or 5 s the
// start-up (imports, reading inputs) would dominate it.
const ESTIMATE_MIN_FRACTION = 0.03;
const ESTIMATE_MIN_SECONDS = 5;

function wholeSeconds(seconds) {
  const s = Math.floor(seconds);
  return s < 60 ? `${s} s` : fmtDuration(s);
}

/** "about 4 min left" from progress over elapsed time (kinds report progress in units of
 * their real cost, so time per unit of progress stays roughly constant); null too early. */
export function remainingText(fraction, elapsed) {
  if (!(fraction >= ESTIMATE_MIN_FRACTION && elapsed >= ESTIMATE_MIN_SECONDS) || fraction >= 1) return null;
  const left = (elapsed * (1 - fraction)) / fraction;
  if (left < 60) return "less than a minute left";
  if (left < 3600) return `about ${Math.round(left / 60)} min left`;
  return `about ${(left / 3600).toFixed(1)} h left`;
}

export function showProgress(run) {
  const panel = $("progress-panel");
  const active = !TERMINAL.has(run.status);
  panel.hidden = !active;
  if (!active) return;
  const fraction = Math.max(0, Math.min(1, Number(run.progress) || 0));
  const bar = $("progress-bar");
  const fill = bar.firstElementChild;
  const queued = run.status === "queued";
  bar.classList.toggle("indeterminate", queued);
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  bar.setAttribute("aria-valuenow", queued ? "0" : String(Math.round(fraction * 100)));
  bar.setAttribute("aria-valuetext", queued ? "Waiting for a worker" : `${Math.round(fraction * 100)} percent`);
  $("progress-message").textContent = run.message || (queued ? "Waiting for a worker…" : "Running…");
  $("progress-percent").textContent = queued ? "queued" : `${Math.round(fraction * 100)} %`;
  const elapsed = queued ? null : runDuration(run);
  const time = $("progress-time");
  if (time) {
    const left = elapsed === null ? null : remainingText(fraction, elapsed);
    time.textContent = elapsed === null ? "" : `${wholeSeconds(Math.max(0, elapsed))} elapsed${left ? ` · ${left}` : ""}`;
  }
}

export function showOutcome(run) {
  const box = $("run-error");
  if (run.status === "failed") {
    box.className = "alert";
    box.replaceChildren(
      el("strong", {}, "The run failed."),
      el("p", { id: "run-error-text", style: "margin:0;white-space:pre-wrap" }, run.error || run.message || "No error text was recorded."),
    );
    box.hidden = false;
  } else if (run.status === "cancelled") {
    box.className = "notice";
    box.replaceChildren(el("p", { style: "margin:0" }, "This run was cancelled", run.message ? `: ${run.message}` : "."));
    box.hidden = false;
  } else {
    box.hidden = true;
  }
}

let rendered = null;

/** On the share page (/s/{token}) downloads go through the token's read-only route. */
function shareDownloadBase() {
  const match = location.pathname.match(/^\/s\/([^/]+)\/?$/);
  return match ? `/api/share/${encodeURIComponent(decodeURIComponent(match[1]))}/download` : null;
}

/** Render the result once per run (re-rendering would reset the user's plot state). */
export function showResult(run, result) {
  const key = run.id ?? "shared"; // the shared view carries no id: one run per page
  if (!result || rendered === key) return;
  rendered = key;
  renderResult($("result"), run, result, { downloadBase: shareDownloadBase() });
}

let provenanceSignature = null;

export function showProvenance(run) {
  // Re-render only when something changed, so an opened <details> stays open.
  const signature = JSON.stringify([run.id, run.status, run.history, run.timings, run.device, run.version]);
  if (signature === provenanceSignature) return;
  provenanceSignature = signature;
  renderProvenance($("provenance"), run);
}
