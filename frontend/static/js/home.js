// Home page: recent runs (refreshed while any is still going) and uploaded datasets.

import {
  api, el, fmtDuration, fmtInt, fmtRelative, fmtDate, runDuration, shortId, showError, showVersion,
  statusBadge, TERMINAL,
} from "./api.js";

const $ = (id) => document.getElementById(id);
const datasetNames = new Map();
const kindTitles = new Map([["geometry", "Geometry inference"]]);

function table(id, caption, headers, rows) {
  return el(
    "div",
    { class: "table-wrap" },
    el(
      "table",
      { class: "data", id },
      el("caption", { class: "sr-only" }, caption),
      el("thead", {}, el("tr", {}, ...headers.map(([h, cls]) => el("th", { scope: "col", class: cls }, h)))),
      el("tbody", {}, ...rows),
    ),
  );
}

function renderRuns(runs) {
  const box = $("runs");
  box.setAttribute("aria-busy", "false");
  if (!runs.length) {
    box.replaceChildren(
      el("p", { class: "empty" }, "No runs yet. ", el("a", { href: "/analyze" }, "Start an analysis"), " (or load the bundled example there), or ", el("a", { href: "/new" }, "launch a simulation"), "."),
    );
    return;
  }
  const rows = runs.map((run) => {
    const ds = run.spec && run.spec.dataset;
    const progress = run.status === "running" ? ` ${Math.round((Number(run.progress) || 0) * 100)} %` : "";
    const d = runDuration(run);
    return el(
      "tr",
      {},
      el("th", { scope: "row" }, el("a", { href: `/runs/${encodeURIComponent(run.id)}`, class: "mono" }, shortId(run.id))),
      el("td", { class: "hide-sm" }, kindTitles.get(run.kind) || run.kind),
      el("td", {}, ds ? datasetNames.get(ds) || el("span", { class: "mono" }, shortId(ds)) : "–"),
      el("td", {}, statusBadge(run.status), el("span", { class: "small muted" }, progress)),
      // What a succeeded run found, in its kind's one sentence (cut to two lines; hover: all).
      el("td", { class: "run-conclusion" }, run.conclusion ? el("span", { title: run.conclusion }, run.conclusion) : "–"),
      el("td", { class: "nowrap", title: fmtDate(run.created_at) }, fmtRelative(run.created_at)),
      el("td", { class: "num" }, d === null ? "–" : fmtDuration(d)),
    );
  });
  box.replaceChildren(
    table("runs-table", "Recent runs, newest first", [["Run"], ["Kind", "hide-sm"], ["Dataset"], ["Status"], ["Result"], ["Created"], ["Duration", "num"]], rows),
  );
}

function renderDatasets(datasets) {
  const box = $("datasets");
  box.setAttribute("aria-busy", "false");
  if (!datasets.length) {
    box.replaceChildren(el("p", { class: "empty" }, "No datasets yet. ", el("a", { href: "/analyze" }, "Upload weights"), "."));
    return;
  }
  const rows = datasets.map((ds) =>
    el(
      "tr",
      {},
      el("th", { scope: "row" }, ds.name || shortId(ds.id)),
      el("td", { class: "hide-sm" }, ds.format || "–"),
      el("td", { class: "num" }, fmtInt(ds.n_pairs)),
      el("td", { class: "num" }, ds.format === "distribution" ? "–" : fmtInt((ds.layers || []).length)),
      el("td", { class: "nowrap", title: fmtDate(ds.created_at) }, fmtRelative(ds.created_at)),
      el(
        "td",
        { class: "nowrap" },
        ds.format === "distribution"
          ? el("a", { href: `/new/spine_fit?dataset=${encodeURIComponent(ds.id)}`, "aria-label": `Fit ${ds.name || ds.id}` }, "Fit")
          : el("a", { href: `/analyze?dataset=${encodeURIComponent(ds.id)}`, "aria-label": `Analyse ${ds.name || ds.id}` }, "Analyse"),
        " ",
        deleteDatasetButton(ds),
      ),
    ),
  );
  box.replaceChildren(
    table("datasets-table", "Uploaded datasets", [["Name"], ["Format", "hide-sm"], ["Pairs / values", "num"], ["Layers", "num"], ["Uploaded"], [el("span", { class: "sr-only" }, "Action")]], rows),
  );
}

/** Delete a dataset after the user confirms; runs that read it keep their results. */
function deleteDatasetButton(ds) {
  const name = ds.name || shortId(ds.id);
  const button = el("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Delete ${name}` }, "Delete");
  button.addEventListener("click", async () => {
    if (!window.confirm(`Delete the dataset “${name}” and its files? Runs that read it keep their results.`)) return;
    button.disabled = true;
    try {
      await api(`/api/datasets/${encodeURIComponent(ds.id)}`, { method: "DELETE" });
      await loadDatasets();
    } catch (err) {
      button.disabled = false;
      showError($("page-error"), err, "Could not delete the dataset.");
    }
  });
  return button;
}

async function loadDatasets() {
  try {
    const datasets = await api("/api/datasets?limit=20");
    for (const ds of datasets) datasetNames.set(ds.id, ds.name || shortId(ds.id));
    renderDatasets(datasets);
  } catch (err) {
    $("datasets").setAttribute("aria-busy", "false");
    $("datasets").replaceChildren();
    showError($("page-error"), err, "Could not load the datasets.");
  }
}

async function loadKindTitles() {
  try {
    for (const kind of await api("/api/kinds")) if (kind.name !== "geometry") kindTitles.set(kind.name, kind.title || kind.name);
  } catch {
    /* the kind's name is shown instead */
  }
}

let timer = null;

async function loadRuns() {
  clearTimeout(timer);
  try {
    const runs = await api("/api/runs?limit=25");
    renderRuns(runs);
    const live = runs.some((r) => !TERMINAL.has(r.status));
    $("runs-updated").textContent = live ? "Updating while runs are in progress" : "";
    if (live) timer = setTimeout(loadRuns, 3000);
  } catch (err) {
    $("runs").setAttribute("aria-busy", "false");
    $("runs").replaceChildren();
    showError($("page-error"), err, "Could not load the runs.");
  }
}

showVersion();
await Promise.all([loadDatasets(), loadKindTitles()]);
loadRuns();
