// Rendering a run's result and provenance. Shared by the run page and the share page.

import { ApiError, el, fmtCI, fmtDate, fmtDuration, fmtInt, fmtInterval, fmtNum, fmtPM, showError } from "./api.js";
import { plotlyReady } from "./plotly.js";

const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
};

/** Which figure goes in which div, with its caption. */
const FIGURES = [
  {
    name: "delta_cdf",
    id: "delta-cdf-plot",
    heading: "ΔCDF per candidate potential",
    caption:
      "ΔCDF is the 1-Wasserstein distance between the normalised dual-space weight change and N(0, 1); " +
      "lower means more Gaussian. Error bars are bootstrap confidence intervals; the shaded band is the " +
      "best candidate's interval. Negative entropy (NE) is placed at p = 1.",
    wide: true,
  },
  {
    name: "histogram",
    id: "histogram-plot",
    heading: "Distribution of the dual change",
    caption: "Histogram of the normalised dual change for the selected potential, against the N(0, 1) density.",
  },
  {
    name: "qq",
    id: "qq-plot",
    heading: "Q-Q plot",
    caption: "Sample quantiles of the normalised dual change against N(0, 1) quantiles; a Gaussian change lies on y = x.",
  },
];

/** Look up a candidate's label from a verdict reference (dict, key or label). */
function labelOf(ref, candidates = []) {
  if (ref === null || ref === undefined) return null;
  if (typeof ref === "object") {
    if (ref.label) return ref.label;
    ref = ref.key;
  }
  const c = candidates.find((x) => x.key === ref || x.label === ref);
  return c ? c.label : String(ref);
}

function yesNo(value) {
  if (value === null || value === undefined) return el("span", { class: "no" }, "–");
  return value ? el("span", { class: "yes" }, "yes") : el("span", { class: "no" }, "no");
}

function familyName(family) {
  const f = String(family || "").toLowerCase();
  if (f.includes("entropy") || f === "ne") return "negative entropy";
  if (f.includes("p")) return "p-norm";
  return family || "–";
}

// ------------------------------------------------------------------ conclusion

/** The kind's one-sentence conclusion (geometry's is its verdict's headline). */
function conclusionOf(summary) {
  return (summary && (summary.conclusion || summary.headline || (summary.verdict && summary.verdict.text))) || "";
}

/** The conclusion at the top of a result of any kind other than geometry (whose verdict card holds it). */
function renderConclusion(summary) {
  const text = conclusionOf(summary);
  if (!text) return null;
  return el(
    "section",
    { class: "card verdict", "aria-labelledby": "conclusion-heading" },
    el("h2", { id: "conclusion-heading", class: "sr-only" }, "Conclusion"),
    el("p", { class: "text conclusion", id: "conclusion" }, text),
  );
}

// ------------------------------------------------------------------ verdict

function fmtP(c) {
  if (!c || c.p_value === null || c.p_value === undefined) return "–";
  return c.p_value_bounded ? `< ${fmtNum(c.p_value, 2)}` : fmtNum(c.p_value, 2);
}

function renderVerdict(summary) {
  const verdict = summary.verdict || {};
  const candidates = summary.candidates || [];
  const bestLabel = (summary.best && summary.best.label) || labelOf(verdict.best, candidates) || "–";
  const bestCandidate = candidates.find((c) => summary.best && c.key === summary.best.key);
  const runnerUp = labelOf(verdict.runner_up, candidates);
  const nevp = verdict.negative_entropy_vs_p_norm || null;
  const fitting = (verdict.fitting || []).map((f) => labelOf(f, candidates));
  const multi = (summary.layers || []).length > 1;

  const facts = el("dl", { class: "facts" });
  const fact = (term, ...value) => facts.append(el("div", {}, el("dt", {}, term), el("dd", {}, ...value)));
  if (bestCandidate) fact("ΔCDF of best", fmtInterval(bestCandidate.delta_cdf, bestCandidate.delta_cdf_ci), " ", bestCandidate.delta_cdf_ci ? null : el("span", { class: "muted small" }, `fit p ${fmtP(bestCandidate)}`));
  fact(multi ? "Fit (pooled)" : "Fit", fitting.length ? fitting.join(", ") : el("span", { class: "no" }, "no candidate fits"));
  if (runnerUp) fact("Runner-up", runnerUp);
  if (verdict.distinguishable !== undefined) {
    const basis = verdict.basis === "test" ? " by the tests" : verdict.basis === "interval" ? " by the gap's interval" : "";
    fact("Distinguishable from runner-up", yesNo(verdict.distinguishable), el("span", { class: "muted small" }, basis + (verdict.difference_ci ? ` Δ ${fmtCI(verdict.difference_ci)}` : "")));
  }
  if (nevp && nevp.winner) {
    // difference = ΔCDF(losing family) − ΔCDF(winning family) ≥ 0.
    const winner = familyName(nevp.winner);
    const margin = nevp.difference > 0 ? ` by ${fmtNum(nevp.difference)} in ΔCDF` : "";
    fact(
      "Negative entropy vs p-norms",
      `${winner} wins${margin}`,
      nevp.distinguishable === null || nevp.distinguishable === undefined
        ? null
        : el("span", { class: "small" }, nevp.distinguishable ? " (distinguishable)" : " (not distinguishable)"),
    );
  }
  if (summary.noise) fact("Measurement noise", "declared: tests calibrated by simulation");
  const n = summary.n_pairs;
  if (n !== undefined) fact("Weight pairs", fmtInt(n));

  return el(
    "section",
    { class: "card verdict", "aria-labelledby": "verdict-heading" },
    el("h2", { id: "verdict-heading", class: "sr-only" }, "Verdict"),
    summary.best || verdict.best
      ? el("p", { class: "headline" }, multi ? "Most Gaussian dual change, pooled: " : "Most Gaussian dual change: ", el("span", { class: "best-name" }, bestLabel))
      : el("p", { class: "headline" }, "No candidate potential could be scored on these weights."),
    conclusionOf(summary) ? el("p", { class: "text conclusion", id: "conclusion" }, el("span", { id: "verdict-text" }, conclusionOf(summary))) : null,
    facts,
  );
}

// ------------------------------------------------------------------ figures

/** Plot one figure; turn a Plotly dropdown (updatemenus) into an accessible <select>. */
export function plotFigure(div, fig, options = {}) {
  if (window.Plotly) {
    div.plotRequest = null;
    drawFigure(div, fig, options);
    return;
  }
  // The text and tables are on the page already; the figure follows when Plotly arrives.
  const token = {};
  div.plotRequest = token; // a later request (another layer) supersedes this one
  div.replaceChildren(el("p", { class: "empty plot-loading" }, "Loading the figure…"));
  plotlyReady().then(
    () => {
      if (div.plotRequest !== token) return;
      div.replaceChildren();
      drawFigure(div, fig, options);
    },
    (err) => {
      if (div.plotRequest !== token) return;
      div.replaceChildren(el("p", { class: "empty" }, `${err.message} Reload the page to try again; the downloads hold the figure's data.`));
    },
  );
}

function drawFigure(div, fig, { selectId, controls, controlLabel = "Potential" } = {}) {
  const data = (fig && fig.data) || [];
  const layout = structuredClone((fig && fig.layout) || {});
  // The card's heading names the figure, so the figure's own title (kept for notebook
  // users) is dropped here, and with it the room reserved above the plot.
  layout.title = { text: "" };
  layout.margin = { ...(layout.margin || {}), t: 40 };
  const menu = Array.isArray(layout.updatemenus) ? layout.updatemenus.find((m) => Array.isArray(m.buttons) && m.buttons.length) : null;
  if (menu && controls) {
    layout.updatemenus = layout.updatemenus.filter((m) => m !== menu);
    if (!layout.updatemenus.length) delete layout.updatemenus;
    const select = el("select", { id: selectId, name: selectId });
    menu.buttons.forEach((button, i) => {
      select.append(el("option", { value: String(i), selected: i === (menu.active || 0) }, button.label || `option ${i + 1}`));
    });
    select.addEventListener("change", () => {
      const button = menu.buttons[Number(select.value)];
      if (!button) return;
      const [traceUpdate = {}, layoutUpdate = {}] = button.args || [];
      const relayout = Object.fromEntries(Object.entries(layoutUpdate || {}).filter(([k]) => !k.startsWith("title")));
      if (button.method === "restyle") window.Plotly.restyle(div, traceUpdate, layoutUpdate);
      else if (button.method === "relayout") window.Plotly.relayout(div, Object.fromEntries(Object.entries(traceUpdate).filter(([k]) => !k.startsWith("title"))));
      else window.Plotly.update(div, traceUpdate, relayout);
      div.dataset.selected = select.value;
    });
    controls.replaceChildren(el("label", { for: selectId }, controlLabel), select);
    controls.hidden = false;
  }
  window.Plotly.newPlot(div, data, layout, PLOT_CONFIG);
  // A figure whose cells open a run (layout.meta.cell_link + the cell's customdata query).
  const link = layout.meta && layout.meta.cell_link;
  if (link && typeof div.on === "function") {
    div.on("plotly_click", (event) => {
      const query = event && event.points && event.points[0] && event.points[0].customdata;
      if (typeof query === "string") location.assign(`${link}&${query}`);
    });
  }
}

/**
 * The geometry figures, with a layer selector when the result holds several samples
 * (summary.figure_sets: the pooled layers, then each layer; figure keys "name|i").
 * `onLayer(i)` is called when the selection changes (the candidate table follows it).
 */
function renderFigures(figures, sets, onLayer) {
  const wrap = el("div", { class: "stack" });
  const cards = [];
  let pair = null;
  if (sets.length > 1) {
    const select = el("select", { id: "layer-select", name: "layer-select" });
    sets.forEach((name, i) => select.append(el("option", { value: String(i) }, name)));
    select.addEventListener("change", () => {
      plotAll(Number(select.value));
      onLayer(Number(select.value));
    });
    wrap.append(el(
      "section",
      { class: "card layer-picker", "aria-label": "Layer" },
      el("label", { for: "layer-select" }, "Figures and table for "),
      select,
    ));
  }
  for (const spec of FIGURES) {
    if (!figures || !figures[spec.name]) continue;
    const div = el("div", { id: spec.id, class: "plot-div" });
    const controls = el("div", { class: "plot-controls", hidden: true });
    const headingId = `${spec.id}-heading`;
    const card = el(
      "section",
      { class: "card", "aria-labelledby": headingId },
      el("h2", { id: headingId }, spec.heading),
      controls,
      el("figure", { class: "plot" }, div, el("figcaption", {}, spec.caption)),
    );
    if (spec.wide) {
      wrap.append(card);
    } else {
      if (!pair) {
        pair = el("div", { class: "grid-2" });
        wrap.append(pair);
      }
      pair.append(card);
    }
    cards.push({ spec, div, controls });
  }
  function plotAll(i) {
    for (const { spec, div, controls } of cards) {
      const fig = figures[i ? `${spec.name}|${i}` : spec.name] || figures[spec.name];
      div.dataset.layer = String(i);
      plotFigure(div, fig, { selectId: `${spec.id.replace("-plot", "")}-select`, controls });
    }
  }
  return { node: wrap, plot: () => plotAll(0) };
}

// ------------------------------------------------------------------ tables

function renderCandidates(summary, score, setName) {
  const candidates = [...((score && score.candidates) || summary.candidates || [])];
  const verdict = (score && score.verdict) || summary.verdict || {};
  const bestKey = verdict.best && verdict.best.key;
  candidates.sort((a, b) => {
    const x = a.delta_cdf === null || a.delta_cdf === undefined ? Infinity : a.delta_cdf;
    const y = b.delta_cdf === null || b.delta_cdf === undefined ? Infinity : b.delta_cdf;
    return x - y;
  });
  const body = el("tbody");
  candidates.forEach((c, i) => {
    const isBest = c.key === bestKey;
    const fit = c.fits === null || c.fits === undefined ? "" : c.fits ? " ✓" : " ✗";
    body.append(
      el(
        "tr",
        { class: isBest ? "is-best" : null },
        el("td", { class: "num" }, c.delta_cdf === null || c.delta_cdf === undefined ? "–" : String(i + 1)),
        el("th", { scope: "row" }, c.label || c.key, isBest ? el("span", { class: "sr-only" }, " (best)") : null),
        el("td", {}, familyName(c.family)),
        el("td", { class: "num" }, c.delta_cdf === null || c.delta_cdf === undefined ? "not defined" : fmtNum(c.delta_cdf)),
        el("td", { class: "num", title: c.ci_note || null }, c.delta_cdf_ci ? fmtCI(c.delta_cdf_ci) : "—"),
        el("td", { class: c.fits ? "num yes" : "num" }, fmtP(c) + fit),
        el("td", { class: "num", title: "Change size checked against the small-change regime" }, fmtNum(c.change_size)),
        el("td", { class: "num" }, fmtInt(c.n_used)),
      ),
    );
  });
  const head = el(
    "thead",
    {},
    el(
      "tr",
      {},
      el("th", { scope: "col", class: "num" }, "Rank"),
      el("th", { scope: "col" }, "Potential"),
      el("th", { scope: "col" }, "Family"),
      el("th", { scope: "col", class: "num" }, "ΔCDF"),
      el("th", { scope: "col", class: "num" }, "Interval"),
      el("th", { scope: "col", class: "num", title: "p-value of 'the dual change is a zero-mean Gaussian'" }, "Fit p"),
      el("th", { scope: "col", class: "num", title: "Δφ = ‖ξ‖ / ‖∇φ(w₀)‖ (p-norms); RMS of ξ (negative entropy)" }, "Change size"),
      el("th", { scope: "col", class: "num" }, "Weights"),
    ),
  );
  const conf = summary.bootstrap && summary.bootstrap.confidence;
  const level = conf ? `${Math.round(conf * 100)} %` : "";
  const caption = el(
    "caption",
    {},
    `${setName ? `${setName}: ` : ""}sorted by ΔCDF. Interval: ${level} bootstrap interval, given only where ΔCDF is clearly above 0 ` +
      "(elsewhere — with the reason on hover: the test answers instead). Fit p: goodness-of-fit test of a zero-mean Gaussian change" +
      (summary.noise ? ", calibrated for the declared measurement noise" : "") +
      "; ✓ fits, ✗ ruled out.",
  );
  return el(
    "section",
    { class: "card", "aria-labelledby": "candidates-heading", id: "candidates-card" },
    el("h2", { id: "candidates-heading" }, "Candidate potentials"),
    el("div", { class: "table-wrap" }, el("table", { class: "data", id: "candidates-table" }, caption, head, body)),
  );
}

function layerRows(summary, table) {
  // The result's table may already hold per-layer rows (syngeo.figures.layer_table);
  // otherwise (e.g. it holds the CSV's per-candidate rows) derive them from the summary.
  if (Array.isArray(table) && table.length && table[0] && "layer" in table[0] && "best" in table[0] && "runner_up" in table[0]) return table;
  return (summary.layers || []).map((layer) => {
    const v = layer.verdict || {};
    const cands = layer.candidates || [];
    const best = cands.find((c) => v.best && (c.key === (v.best.key || v.best) || c.label === (v.best.label || v.best)));
    return {
      layer: layer.name,
      n: layer.n,
      best: labelOf(v.best, cands),
      delta_cdf: best ? best.delta_cdf : null,
      runner_up: labelOf(v.runner_up, cands),
      fitting: (v.fitting || []).map((f) => labelOf(f, cands)),
      distinguishable: v.distinguishable,
      n_zero: layer.n_zero,
      n_sign_flips: layer.n_sign_flips,
    };
  });
}

function renderLayers(summary, table) {
  const rows = layerRows(summary, table);
  const body = el("tbody");
  for (const r of rows) {
    body.append(
      el(
        "tr",
        {},
        el("th", { scope: "row", class: "mono" }, r.layer ?? "–"),
        el("td", { class: "num" }, fmtInt(r.n)),
        el("td", {}, r.best ?? "–"),
        el("td", { class: "num" }, fmtNum(r.delta_cdf)),
        el("td", {}, r.runner_up ?? "–"),
        el("td", {}, r.fitting ? (r.fitting.length ? r.fitting.join(", ") : "none") : "–"),
        el("td", {}, yesNo(r.distinguishable)),
        el("td", { class: "num" }, fmtInt(r.n_zero)),
        el("td", { class: "num" }, fmtInt(r.n_sign_flips)),
      ),
    );
  }
  const head = el(
    "thead",
    {},
    el(
      "tr",
      {},
      ...["Layer", "Weights", "Best", "ΔCDF of best", "Runner-up", "Fit", "Distinguishable", "Zero", "Sign flips"].map((h, i) =>
        el("th", { scope: "col", class: [1, 3, 7, 8].includes(i) ? "num" : null }, h),
      ),
    ),
  );
  return el(
    "section",
    { class: "card", "aria-labelledby": "layers-heading" },
    el("h2", { id: "layers-heading" }, "Per layer"),
    el("div", { class: "table-wrap" }, el("table", { class: "data", id: "layers-table" }, el("caption", {}, "The same inference run on each layer separately. Zero: weights equal to zero before or after; sign flips: weights whose sign changed."), head, body)),
  );
}

/**
 * The download buttons. `base` is the download route: /api/runs/{id}/download, or on the
 * share page /api/share/{token}/download (the same three formats, read-only).
 */
function renderDownloads(base, { csv = true } = {}) {
  const card = el(
    "section",
    { class: "card", "aria-labelledby": "downloads-heading" },
    el("div", { class: "card-head" }, el("h2", { id: "downloads-heading" }, "Downloads")),
    el(
      "div",
      { class: "downloads" },
      csv ? el("a", { class: "btn", href: `${base}?format=csv`, download: "", id: "download-csv" }, "Table (CSV)") : null,
      el("a", { class: "btn", href: `${base}?format=json`, download: "", id: "download-json", title: "The run record (spec, provenance) and the result summary" }, "Summary (JSON)"),
      el("a", { class: "btn", href: `${base}?format=npz`, download: "", id: "download-npz", title: "Every result array, as stored (NumPy .npz)" }, "Arrays (NPZ)"),
    ),
    el(
      "p",
      { class: "small muted downloads-note" },
      "The arrays file holds the result's numerical arrays, the data behind the figures; read it with ",
      el("code", {}, "numpy.load(path, allow_pickle=False)"),
      ".",
    ),
    el("div", { class: "alert", role: "alert", id: "download-error", hidden: true }),
  );
  for (const link of card.querySelectorAll(".downloads a")) link.addEventListener("click", download);
  return card;
}

/** The file name the server gave a download (Content-Disposition), if any. */
function attachmentName(response) {
  const match = /filename="?([^";]+)"?/i.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : "";
}

/**
 * A download link's click: fetch the file first, so that a failed download shows the
 * server's problem and fix on the page (a plain link would be silently cancelled), then save
 * it. The link's href stays for opening it in a new tab or copying it.
 */
async function download(event) {
  if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  const link = event.currentTarget;
  const box = document.getElementById("download-error");
  box.hidden = true;
  link.setAttribute("aria-busy", "true");
  try {
    let response;
    try {
      response = await fetch(link.href);
    } catch {
      throw new ApiError(0, "The server could not be reached.", "Check that it is running, then try again.");
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new ApiError(response.status, body.problem || `The server answered HTTP ${response.status}.`, body.fix || "");
    }
    const url = URL.createObjectURL(await response.blob());
    const save = el("a", { href: url, download: attachmentName(response), hidden: true });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000); // after the browser has read it
  } catch (err) {
    showError(box, err, `Could not download “${link.textContent}”.`);
  } finally {
    link.removeAttribute("aria-busy");
  }
}

function downloadBase(run, options) {
  return (options && options.downloadBase) || `/api/runs/${encodeURIComponent(run.id)}/download`;
}

/**
 * Render a succeeded run's result into `container`.
 * `result` is the body of GET /api/runs/{id}/result: {summary, figures, table}.
 * `options.downloadBase`: where the downloads come from (default: the run's own route).
 */
export function renderResult(container, run, result, options = {}) {
  if (run.kind !== "geometry") {
    renderGenericResult(container, run, result, options);
    return;
  }
  const summary = (result && result.summary) || {};
  const layers = summary.layers || [];
  const sets = summary.figure_sets || [];
  const scores = (layers.length > 1 ? [summary.pooled] : []).concat(layers);
  let table = renderCandidates(summary, scores[0], sets.length > 1 ? sets[0] : null);
  const figures = renderFigures((result && result.figures) || {}, sets, (i) => {
    const next = renderCandidates(summary, scores[i], sets[i]);
    table.replaceWith(next);
    table = next;
  });
  const parts = [renderVerdict(summary), figures.node, table];
  if ((summary.layers || []).length > 1) parts.push(renderLayers(summary, result.table));
  parts.push(renderDownloads(downloadBase(run, options)));
  container.replaceChildren(...parts);
  container.hidden = false;
  // Plot only once the divs are in the document and visible, so Plotly sizes them right.
  figures.plot();
}

// ------------------------------------------------------------------ any other kind
//
// Kinds other than geometry get one generic view built from their result alone: the
// summary's top-level scalars as key facts (plus the raw JSON), one card per figure
// titled from its layout.title, the table rows as a sortable table, and the downloads.

const TABLE_PAGE = 50;
const RAW_JSON_LIMIT = 200_000;

function humanise(key) {
  const words = String(key).replace(/sha256/gi, "SHA-256").replace(/_/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2").trim();
  return words ? words[0].toUpperCase() + words.slice(1) : String(key);
}

function slug(text) {
  return String(text).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "x";
}

const isScalar = (v) => v === null || ["number", "string", "boolean"].includes(typeof v);

/** Plotly titles may hold <br>, <b>, <sup>…: the first line is the heading, the rest a caption. */
function figureTitle(fig, name) {
  const title = fig && fig.layout ? fig.layout.title : null;
  const raw = typeof title === "string" ? title : title && typeof title.text === "string" ? title.text : "";
  const sub = title && title.subtitle && typeof title.subtitle.text === "string" ? title.subtitle.text : "";
  const toText = (html) => new DOMParser().parseFromString(`<body>${html}</body>`, "text/html").body.textContent.replace(/\s+/g, " ").trim();
  const [first, ...rest] = raw.split(/<br\s*\/?>/i);
  const heading = toText(first || "");
  const caption = [toText(rest.join(" ")), toText(sub)].filter(Boolean).join(" ");
  return { heading: heading || humanise(name), caption };
}

/** A figure with several subplots (or a declared width) gets the whole row. */
function isWide(fig) {
  const layout = (fig && fig.layout) || {};
  if (layout.grid) return true;
  if (Object.keys(layout).some((k) => /^(x|y)axis[2-9]/.test(k))) return true;
  return Number(layout.width) > 700;
}

// Seeds and ids are copied, not read as quantities: no thousands separators.
const isVerbatim = (key) => /(^|_)(seed|id)$/i.test(String(key));

function factValue(v, key) {
  if (v === null || v === undefined) return "–";
  // A hash is checked, not read: its start here, the whole on hover and in the JSON below.
  if (typeof v === "string" && /sha256$/i.test(String(key)) && v.length > 16) {
    return el("code", { class: "hash", title: v }, `${v.slice(0, 12)}…`);
  }
  if (typeof v === "boolean") return yesNo(v);
  if (typeof v === "number" && isVerbatim(key)) return String(v);
  if (typeof v === "number") {
    const text = Number.isInteger(v) && Math.abs(v) < 1e15 ? fmtInt(v) : fmtNum(v);
    return el("span", { title: String(v) }, text);
  }
  if (Array.isArray(v)) return v.map((x) => (typeof x === "number" ? (Number.isInteger(x) ? fmtInt(x) : fmtNum(x)) : String(x))).join(", ");
  return String(v);
}

function factsList(entries, id) {
  const facts = el("dl", { class: "facts", id });
  for (const [key, value] of entries) facts.append(el("div", {}, el("dt", {}, humanise(key)), el("dd", {}, factValue(value, key))));
  return facts;
}

function renderGenericSummary(summary) {
  // The conclusion has its own card above this one.
  const entries = Object.entries(summary || {}).filter(([k]) => k !== "conclusion");
  // Long text (a verdict, a note) reads better as a paragraph than as a tile.
  const texts = entries.filter(([, v]) => typeof v === "string" && v.length > 80);
  const facts = entries.filter(([, v]) => (isScalar(v) && !(typeof v === "string" && v.length > 80)) ||
    (Array.isArray(v) && v.length <= 8 && v.every((x) => typeof x === "number" || typeof x === "string")));
  // One level down: small objects made only of scalars (e.g. a fit's parameters).
  const groups = entries.filter(([, v]) => v && typeof v === "object" && !Array.isArray(v) &&
    Object.keys(v).length && Object.keys(v).length <= 12 && Object.values(v).every(isScalar));

  let json = JSON.stringify(summary ?? {}, null, 2);
  const truncated = json.length > RAW_JSON_LIMIT;
  if (truncated) json = `${json.slice(0, RAW_JSON_LIMIT)}\n…`;

  return el(
    "section",
    { class: "card summary-card", "aria-labelledby": "summary-heading" },
    el("h2", { id: "summary-heading" }, "Summary"),
    ...texts.map(([k, v]) => el("p", { class: "summary-text" }, el("strong", {}, `${humanise(k)}: `), v)),
    facts.length ? factsList(facts, "summary-facts") : null,
    ...groups.map(([k, v]) => el("div", { class: "fact-group" }, el("h3", {}, humanise(k)), factsList(Object.entries(v)))),
    !facts.length && !texts.length && !groups.length ? el("p", { class: "muted" }, "The summary has no single values; see the JSON below.") : null,
    el(
      "details",
      { class: "raw-json", id: "summary-json" },
      el("summary", {}, "Full summary (JSON)"),
      truncated ? el("p", { class: "small muted" }, "Shortened here; the JSON download has all of it.") : null,
      el("pre", { class: "json" }, json),
    ),
  );
}

function renderGenericFigures(figures) {
  const entries = Object.entries(figures || {}).filter(([, f]) => f && Array.isArray(f.data));
  const grid = el("div", { class: "plot-grid", id: "figures" });
  const pending = [];
  // Narrow figures go two to a row; one left without a partner takes the whole row.
  const wide = entries.map(([, fig]) => isWide(fig));
  for (let i = 0; i < entries.length; i += 1) {
    if (wide[i]) continue;
    if (i + 1 < entries.length && !wide[i + 1]) i += 1;
    else wide[i] = true;
  }
  for (const [index, [name, fig]] of entries.entries()) {
    const id = `fig-${slug(name)}`;
    const { heading, caption } = figureTitle(fig, name);
    const div = el("div", { id: `${id}-plot`, class: "plot-div", dataset: { figure: name } });
    const controls = el("div", { class: "plot-controls", hidden: true });
    grid.append(
      el(
        "section",
        { class: `card figure-card${wide[index] ? " wide" : ""}`, "aria-labelledby": `${id}-heading` },
        el("h2", { id: `${id}-heading` }, heading),
        controls,
        el("figure", { class: "plot" }, div, caption ? el("figcaption", {}, caption) : null),
      ),
    );
    pending.push(() => plotFigure(div, fig, { selectId: `${id}-select`, controls, controlLabel: "Show" }));
  }
  return { node: entries.length ? grid : null, plot: () => pending.forEach((f) => f()) };
}

function cellValue(v, key) {
  if (v === null || v === undefined || v === "") return "–";
  if (typeof v === "boolean") return yesNo(v);
  if (typeof v === "number" && isVerbatim(key)) return String(v);
  if (typeof v === "number") return Number.isInteger(v) && Math.abs(v) < 1e15 ? fmtInt(v) : fmtNum(v);
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function compareValues(a, b) {
  const missing = (x) => x === null || x === undefined || x === "" || (typeof x === "number" && Number.isNaN(x));
  if (missing(a) || missing(b)) return missing(a) - missing(b);
  if (typeof a === "number" && typeof b === "number") return a - b;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  const text = (x) => (typeof x === "object" ? JSON.stringify(x) : String(x));
  return text(a).localeCompare(text(b), undefined, { numeric: true });
}

/**
 * The columns the page shows: the kind's own (ResultOut.columns: labels, an estimate with
 * its interval or spread in one cell, words for coded values), else every row key as is.
 */
function tableColumns(rows, declared) {
  if (Array.isArray(declared) && declared.length) return declared;
  const keys = [];
  for (const row of rows) for (const key of Object.keys(row || {})) if (!keys.includes(key)) keys.push(key);
  return keys.map((key) => ({ key, label: humanise(key) }));
}

function columnCell(row, column) {
  const v = row[column.key];
  if (column.interval) {
    const ci = [row[column.interval[0]], row[column.interval[1]]];
    // A row without an interval (none was computed for it) shows its estimate alone.
    if (ci.every((b) => b === null || b === undefined)) return cellValue(v, column.key);
    return fmtInterval(v, ci);
  }
  if (column.spread) return fmtPM(v, row[column.spread]);
  if (column.values && typeof v === "string" && column.values[v]) return column.values[v];
  return cellValue(v, column.key);
}

/** The result's rows as a table sorted by clicking (or pressing Enter on) a column heading. */
function renderSortableTable(rows, declared) {
  const columnList = tableColumns(rows, declared);
  const columns = columnList.map((c) => c.key);
  const byKey = Object.fromEntries(columnList.map((c) => [c.key, c]));
  const numeric = new Set(columns.filter((c) => rows.every((r) => r[c] === null || r[c] === undefined || typeof r[c] === "number")));
  let order = rows.map((_, i) => i);
  let sortBy = null;
  let direction = 1;
  let limit = TABLE_PAGE;

  const body = el("tbody");
  const more = el("button", { type: "button", class: "btn btn-small", id: "table-show-all" });
  const headers = columns.map((c) => {
    const button = el("button", { type: "button", class: "sort-btn", title: byKey[c].help || null }, byKey[c].label, el("span", { class: "sort-icon", "aria-hidden": "true" }));
    const th = el("th", { scope: "col", class: numeric.has(c) ? "num" : null, dataset: { column: c } }, button);
    button.addEventListener("click", () => {
      direction = sortBy === c ? -direction : 1;
      sortBy = c;
      // A stable sort on the original order: ties keep the kind's own row order.
      order = rows.map((_, i) => i).sort((i, j) => direction * compareValues(rows[i][c], rows[j][c]) || i - j);
      headers.forEach((h) => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", direction > 0 ? "ascending" : "descending");
      fill();
    });
    return th;
  });

  function fill() {
    body.replaceChildren(
      ...order.slice(0, limit).map((i) =>
        el("tr", {}, ...columns.map((c) => el("td", { class: numeric.has(c) ? "num" : null, title: typeof rows[i][c] === "number" ? String(rows[i][c]) : null }, columnCell(rows[i], byKey[c])))),
      ),
    );
    more.hidden = rows.length <= limit;
    more.textContent = `Show all ${fmtInt(rows.length)} rows`;
  }
  more.addEventListener("click", () => {
    limit = rows.length;
    fill();
  });
  fill();

  return el(
    "section",
    { class: "card", "aria-labelledby": "table-heading" },
    el("div", { class: "card-head" }, el("h2", { id: "table-heading" }, "Table"), el("span", { class: "small muted" }, `${fmtInt(rows.length)} row${rows.length === 1 ? "" : "s"}`)),
    el(
      "div",
      { class: "table-wrap" },
      el("table", { class: "data sortable", id: "result-table" },
        el("caption", {}, "Select a column heading to sort by it; select it again to reverse the order."),
        el("thead", {}, el("tr", {}, ...headers)), body),
    ),
    el("div", { class: "table-more" }, more),
  );
}

/** The result of any kind other than geometry. */
function renderGenericResult(container, run, result, options) {
  const summary = (result && result.summary) || {};
  const rows = Array.isArray(result && result.table) ? result.table.filter((r) => r && typeof r === "object") : [];
  const figures = renderGenericFigures((result && result.figures) || {});
  const parts = [renderConclusion(summary), renderGenericSummary(summary), figures.node];
  if (rows.length) parts.push(renderSortableTable(rows, result.columns));
  parts.push(renderDownloads(downloadBase(run, options), { csv: rows.length > 0 }));
  container.replaceChildren(...parts.filter(Boolean));
  container.hidden = false;
  figures.plot();
}

// ------------------------------------------------------------------ provenance

function kvList(entries) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of entries) {
    if (v === undefined) continue;
    dl.append(el("dt", {}, k), el("dd", {}, v === null ? "–" : v));
  }
  return dl;
}

function renderHashes(hashes) {
  if (!hashes || (typeof hashes === "object" && !Object.keys(hashes).length)) return el("p", { class: "muted" }, "–");
  if (Array.isArray(hashes)) return kvList(hashes.map((h, i) => [String(i + 1), el("code", {}, typeof h === "string" ? h : JSON.stringify(h))]));
  return kvList(Object.entries(hashes).map(([k, v]) => [k, el("code", {}, typeof v === "string" ? v : JSON.stringify(v))]));
}

function renderTimings(timings) {
  if (!timings || !Object.keys(timings).length) return el("p", { class: "muted" }, "–");
  return kvList(
    Object.entries(timings).map(([k, v]) => {
      const name = k.replace(/_s$/, "").replace(/_/g, " ");
      return [name, typeof v === "number" ? fmtDuration(/_ms$/.test(k) ? v / 1000 : v) : JSON.stringify(v)];
    }),
  );
}

function renderHistory(history) {
  if (!Array.isArray(history) || !history.length) return el("p", { class: "muted" }, "–");
  const ol = el("ol", { class: "small", style: "margin:0;padding-left:1.2rem" });
  for (const h of history) ol.append(el("li", {}, el("strong", {}, h.status), " — ", fmtDate(h.at)));
  return ol;
}

/** Provenance of a run: spec, version, device, input hashes, timings, status history. */
export function renderProvenance(container, run) {
  container.replaceChildren(
    el(
      "section",
      { class: "card provenance", "aria-labelledby": "provenance-heading" },
      el("h2", { id: "provenance-heading" }, "Provenance"),
      el("p", { class: "muted small" }, "Everything needed to reproduce this run."),
      kvList([
        ["Run", run.id === undefined ? undefined : el("code", {}, run.id)],
        ["Kind", run.kind],
        ["Package version", run.version ?? null],
        ["Device", run.device ?? null],
        ["Worker", run.worker === undefined ? undefined : run.worker ?? null],
        ["Created", fmtDate(run.created_at)],
        ["Started", run.started_at ? fmtDate(run.started_at) : null],
        ["Finished", run.finished_at ? fmtDate(run.finished_at) : null],
      ]),
      el("h3", {}, "Input hashes (SHA-256)"),
      run.inputs ? renderHashes(Object.fromEntries(run.inputs.map((i) => [i.name, i.sha256]))) : renderHashes(run.input_hashes),
      el("div", { class: "grid-2", style: "margin-top:0.5rem" },
        el("div", {}, el("h3", {}, "Timings"), renderTimings(run.timings)),
        run.history === undefined ? null : el("div", {}, el("h3", {}, "Status history"), renderHistory(run.history)),
      ),
      el("details", { style: "margin-top:1rem" }, el("summary", {}, "Full spec (JSON)"), el("pre", { class: "json" }, JSON.stringify(run.spec ?? {}, null, 2))),
    ),
  );
  container.hidden = false;
}

/** Human description of a run for headings (`kindTitle`: the kind's title from /api/kinds). */
export function runTitle(run, kindTitle) {
  if (run.kind === "geometry") return "Geometry inference";
  return kindTitle || run.kind || "Run";
}
