// /analyze: choose or drop 1–2 files (or load the example), upload, see the dataset
// summary, set options (a form generated from the kind's JSON Schema) and start a run.

import {
  api, ApiError, clearError, el, fmtBytes, fmtInt, fmtNum, fmtPM, shortId, showError, showVersion, wireDropZone,
} from "./api.js";
import { attachEstimate } from "./estimate.js";
import { normalise } from "./form.js";

const $ = (id) => document.getElementById(id);
const KIND = "geometry";

let staged = []; // File objects, in before/after order
let dataset = null; // the uploaded Dataset
let fields = []; // option fields: {key, read(): [include, value]}

// ------------------------------------------------------------------ choosing files

function renderStaged() {
  const list = $("file-list");
  list.replaceChildren();
  staged.forEach((file, i) => {
    const role = staged.length === 1 ? "before + after" : i === 0 ? "before" : "after";
    list.append(
      el(
        "li",
        {},
        el("span", { class: "role-tag" }, role),
        el("span", { class: "name" }, file.name),
        el("span", { class: "size" }, fmtBytes(file.size)),
        el("button", { type: "button", class: "btn btn-small", "aria-label": `Remove ${file.name}`, onclick: () => { staged.splice(i, 1); renderStaged(); } }, "Remove"),
      ),
    );
  });
  if (staged.length === 2) {
    list.append(
      el("li", { class: "file-extra" },
        el("button", { type: "button", class: "btn btn-small", id: "swap-btn", onclick: () => { staged.reverse(); renderStaged(); } }, "Swap before / after"),
      ),
    );
  } else if (staged.length === 1) {
    list.append(
      el("li", { class: "file-extra" },
        el("button", { type: "button", class: "btn btn-small", id: "add-second-btn", onclick: () => $("second-file-input").click() }, "Add the “after” file"),
        el("span", { class: "small muted" }, "only for formats that come as two files"),
      ),
    );
  }
  $("upload-btn").disabled = staged.length === 0;
  $("name-field").hidden = staged.length === 0;
}

function stage(fileList, { append = false } = {}) {
  const files = Array.from(fileList || []);
  if (!files.length) return;
  clearError($("upload-error"));
  const next = append ? [...staged, ...files] : files;
  if (next.length > 2) {
    showError($("upload-error"), new Error(`That makes ${next.length} files; a dataset is one file (before and after as two columns or arrays) or two files (before, then after).`), "Too many files.");
    return;
  }
  staged = next;
  renderStaged();
}

function setupDropzone() {
  const zone = $("dropzone");
  const input = $("file-input");
  input.addEventListener("change", () => {
    stage(input.files);
    input.value = ""; // choosing the same file again still fires "change"
  });
  const second = $("second-file-input");
  second.addEventListener("change", () => {
    stage(second.files, { append: true });
    second.value = "";
  });
  wireDropZone(zone, (files) => stage(files));
}

// ------------------------------------------------------------------ uploading

async function upload() {
  if (!staged.length) return;
  const button = $("upload-btn");
  const status = $("upload-status");
  clearError($("upload-error"));
  const form = new FormData();
  for (const file of staged) form.append("files", file, file.name);
  const name = $("dataset-name").value.trim();
  if (name) form.append("name", name);
  button.disabled = true;
  $("example-btn").disabled = true;
  status.textContent = `Uploading ${staged.length === 1 ? staged[0].name : `${staged.length} files`}…`;
  try {
    const ds = await api("/api/datasets", { method: "POST", form });
    staged = [];
    renderStaged();
    $("dataset-name").value = "";
    status.textContent = "";
    setDataset(ds);
  } catch (err) {
    status.textContent = "";
    showError($("upload-error"), err, "The upload was not accepted.");
    setDataset(null);
  } finally {
    button.disabled = staged.length === 0;
    $("example-btn").disabled = false;
  }
}

async function loadExample() {
  const button = $("example-btn");
  const status = $("upload-status");
  clearError($("upload-error"));
  button.disabled = true;
  status.textContent = "Loading the example…";
  try {
    setDataset(await api("/api/datasets/example", { method: "POST" }));
    status.textContent = "";
  } catch (err) {
    status.textContent = "";
    showError($("upload-error"), err, "Could not load the example.");
  } finally {
    button.disabled = false;
  }
}

function stats(s) {
  if (!s) return "–";
  return fmtPM(s.mean, s.std);
}

function range(s) {
  if (!s) return "–";
  return `${fmtNum(s.min)} … ${fmtNum(s.max)}`;
}

function renderDatasetSummary(ds) {
  const box = $("dataset-summary");
  const files = (ds.files || []).map((f) => `${f.name} (${fmtBytes(f.size)})`).join(", ");
  const layers = ds.layers || [];
  const head = el(
    "thead",
    {},
    el(
      "tr",
      {},
      el("th", { scope: "col" }, "Layer"),
      el("th", { scope: "col" }, "Shape"),
      el("th", { scope: "col", class: "num" }, "Weights"),
      el("th", { scope: "col", class: "num" }, "Before: mean ± sd"),
      el("th", { scope: "col", class: "num" }, "After: mean ± sd"),
      el("th", { scope: "col", class: "num" }, "Zero"),
      el("th", { scope: "col", class: "num" }, "Sign flips"),
    ),
  );
  const body = el(
    "tbody",
    {},
    ...layers.map((l) =>
      el(
        "tr",
        {},
        el("th", { scope: "row", class: "mono" }, l.name),
        el("td", { class: "mono" }, Array.isArray(l.shape) ? l.shape.join(" × ") : String(l.shape ?? "–")),
        el("td", { class: "num" }, fmtInt(l.n)),
        el("td", { class: "num" }, stats(l.before), el("br"), el("span", { class: "small muted" }, range(l.before))),
        el("td", { class: "num" }, stats(l.after), el("br"), el("span", { class: "small muted" }, range(l.after))),
        el("td", { class: "num" }, fmtInt(l.n_zero)),
        el("td", { class: "num" }, fmtInt(l.n_sign_flips)),
      ),
    ),
  );
  const skipped = ds.skipped || [];
  const parts = [
    el(
      "div",
      { class: "notice", id: "dataset-ready" },
      el("div", { class: "card-head", style: "margin-bottom:0.25rem" },
        el("h3", { style: "margin:0" }, "Dataset ", el("span", { id: "dataset-title" }, `“${ds.name || shortId(ds.id)}”`), " is ready"),
        el("button", { type: "button", class: "btn btn-small", id: "change-dataset-btn", onclick: () => { setDataset(null); $("file-input").focus(); } }, "Use other weights"),
      ),
      el(
        "p",
        { class: "small", style: "margin:0" },
        el("strong", {}, fmtInt(ds.n_pairs)), " weight pairs in ", el("strong", {}, fmtInt(layers.length)), layers.length === 1 ? " layer" : " layers",
        ` · format ${ds.format || "–"}`,
        files ? ` · ${files}` : "",
      ),
      // Each file's SHA-256 is what `sha256sum` prints; the dataset's own hash covers them all.
      ...(ds.files || []).map((f) => el("p", { class: "small muted", style: "margin:0.2rem 0 0" }, `SHA-256 of ${f.name} `, el("code", {}, f.sha256))),
    ),
    el("div", { class: "table-wrap" }, el("table", { class: "data", id: "dataset-layers" }, el("caption", {}, "Per-layer summary of the uploaded weights: mean ± standard deviation, with the range below. Zero: weights equal to zero before or after; sign flips: weights whose sign changed."), head, body)),
    skipped.length
      ? el(
          "details",
          { style: "margin-top:0.75rem" },
          el("summary", {}, `${skipped.length} tensor${skipped.length === 1 ? "" : "s"} left out`),
          el("p", { class: "small muted" }, "Biases, normalisation layers and tensors that do not match are left out by default. Tick “Include all tensors” in the advanced options to analyse matching ones too."),
          el("ul", { class: "small mono" }, ...skipped.map((s) => el("li", {}, s))),
        )
      : null,
  ];
  box.replaceChildren(...parts.filter(Boolean));
  box.hidden = false;
}

function setDataset(ds) {
  dataset = ds;
  // Once a dataset is chosen the upload controls step aside ("Use other weights" brings them back).
  for (const id of ["dropzone", "file-list", "upload-actions", "format-help"]) $(id).hidden = Boolean(ds);
  if (ds) $("name-field").hidden = true;
  else $("name-field").hidden = staged.length === 0;
  const url = new URL(location.href);
  if (ds) {
    renderDatasetSummary(ds);
    url.searchParams.set("dataset", ds.id);
  } else {
    $("dataset-summary").hidden = true;
    url.searchParams.delete("dataset");
  }
  history.replaceState(null, "", url);
  $("step-run").classList.toggle("is-disabled", !ds);
  $("run-btn").disabled = !ds;
  $("kind-description").textContent = ds
    ? kindDescription || "Scores every candidate potential and gives a verdict."
    : "Upload weights or load the example first.";
  if (ds) estimator.refresh();
  else $("cost-estimate").hidden = true;
}

// ------------------------------------------------------------------ options form

// Used when /api/kinds cannot be read; mirrors the geometry spec's main fields.
const FALLBACK_SCHEMA = {
  properties: {
    potentials: { anyOf: [{ type: "array", items: { type: "string" } }, { type: "null" }], default: null },
    method: { enum: ["exact", "grid"], type: "string", default: "exact" },
    bootstrap: { type: "integer", minimum: 0, default: 200 },
    include_all: { type: "boolean", default: false },
  },
};

const KNOWN = {
  potentials: {
    label: "Potentials",
    help: "Comma-separated keys, e.g. ne, p1.5, p2. Leave empty for all: negative entropy and p = 1.1 … 3.0.",
    placeholder: "all (ne, p1.1 … p3)",
  },
  method: { label: "Method", help: "exact: closed-form ΔCDF over the sorted sample; grid: the paper’s Riemann sum on a grid of 1000 points in [−5, 5]." },
  bootstrap: { label: "Bootstrap replicates", help: "Resamples for the confidence intervals; 0 turns them off." },
  confidence: { label: "Confidence level", help: "Of the bootstrap intervals, e.g. 0.95." },
  include_all: { label: "Include all tensors", help: "Also analyse biases and normalisation layers." },
  seed: { label: "Random seed", help: "Leave empty for a random seed (it is recorded with the run)." },
  device: { label: "Device", help: "auto uses a GPU when the worker has one." },
};
const ORDER = ["potentials", "method", "bootstrap", "include_all", "confidence", "seed", "device"];

let kindDescription = "";

function fieldFor(key, prop) {
  const known = KNOWN[key] || {};
  const id = `opt-${key}`;
  const label = known.label || prop.title || key.replace(/_/g, " ");
  const help = known.help || prop.description || "";
  const helpId = `${id}-help`;
  const helpNode = help ? el("span", { class: "help", id: helpId }, help) : null;
  const dflt = prop.default;

  if (prop.type === "boolean") {
    const input = el("input", { type: "checkbox", id, name: key, checked: dflt === true, "aria-describedby": help ? helpId : null });
    return {
      node: el("div", { class: "field field-check" }, input, el("div", {}, el("label", { for: id }, label), el("br"), helpNode)),
      read: () => [true, input.checked],
    };
  }

  if (prop.enum && prop.enum.length) {
    const select = el("select", { id, name: key, "aria-describedby": help ? helpId : null });
    if (prop.nullable || dflt === undefined) select.append(el("option", { value: "" }, dflt === null || dflt === undefined ? "default" : `default (${dflt})`));
    for (const v of prop.enum) select.append(el("option", { value: JSON.stringify(v), selected: v === dflt }, String(v)));
    return {
      node: el("div", { class: "field" }, el("label", { for: id }, label), select, helpNode),
      read: () => (select.value === "" ? [prop.nullable, null] : [true, JSON.parse(select.value)]),
    };
  }

  if (prop.type === "integer" || prop.type === "number") {
    const min = prop.minimum ?? prop.exclusiveMinimum;
    const max = prop.maximum ?? prop.exclusiveMaximum;
    const input = el("input", {
      type: "number", id, name: key, inputmode: prop.type === "integer" ? "numeric" : "decimal",
      step: prop.type === "integer" ? "1" : "any", min: min ?? null, max: max ?? null,
      value: dflt === null || dflt === undefined ? null : String(dflt),
      placeholder: dflt === null && prop.nullable ? "automatic" : null,
      "aria-describedby": help ? helpId : null,
    });
    return {
      node: el("div", { class: "field" }, el("label", { for: id }, label), input, helpNode),
      read: () => {
        const raw = input.value.trim();
        if (raw === "") return [prop.nullable, null];
        const n = Number(raw);
        return [true, Number.isFinite(n) ? n : raw];
      },
    };
  }

  if (prop.type === "array" && prop.items && prop.items.enum && prop.items.enum.length) {
    const boxes = prop.items.enum.map((v) => {
      const boxId = `${id}-${String(v).replace(/[^\w-]/g, "_")}`;
      const input = el("input", { type: "checkbox", id: boxId, value: JSON.stringify(v), checked: Array.isArray(dflt) && dflt.includes(v) });
      return { v, input, node: el("label", { class: "chip", for: boxId }, input, String(v)) };
    });
    return {
      node: el("fieldset", { class: "field", style: "border:none;padding:0;margin:0 0 0.9rem;grid-column:1/-1" },
        el("legend", { style: "font-weight:550;margin-bottom:0.3rem" }, label), el("div", { class: "chips" }, ...boxes.map((b) => b.node)), helpNode),
      read: () => {
        const chosen = boxes.filter((b) => b.input.checked).map((b) => b.v);
        return chosen.length ? [true, chosen] : [prop.nullable, null];
      },
    };
  }

  if (prop.type === "array" || prop.type === "string" || prop.type === undefined) {
    const isArray = prop.type === "array";
    const value = Array.isArray(dflt) ? dflt.join(", ") : typeof dflt === "string" ? dflt : "";
    const input = el("input", {
      type: "text", id, name: key, value: value || null, placeholder: known.placeholder || null,
      autocomplete: "off", spellcheck: "false", "aria-describedby": help ? helpId : null,
    });
    return {
      node: el("div", { class: "field", style: isArray ? "grid-column:1/-1" : null }, el("label", { for: id }, label), input, helpNode),
      read: () => {
        const raw = input.value.trim();
        if (raw === "") return [prop.nullable, null];
        if (!isArray) return [true, raw];
        const parts = raw.split(/[\s,;]+/).filter(Boolean);
        const itemType = prop.items && prop.items.type;
        return [true, itemType === "number" || itemType === "integer" ? parts.map(Number) : parts];
      },
    };
  }
  return null; // objects and other shapes keep the server's default
}

function buildOptions(schema) {
  const root = schema || FALLBACK_SCHEMA;
  const props = root.properties || {};
  const keys = Object.keys(props).filter((k) => k !== "dataset" && !props[k].readOnly);
  keys.sort((a, b) => {
    const ia = ORDER.includes(a) ? ORDER.indexOf(a) : ORDER.length;
    const ib = ORDER.includes(b) ? ORDER.indexOf(b) : ORDER.length;
    return ia - ib;
  });
  const box = $("options");
  box.replaceChildren();
  fields = [];
  for (const key of keys) {
    const field = fieldFor(key, normalise(props[key], root));
    if (!field) continue;
    box.append(field.node);
    fields.push({ key, read: field.read });
  }
}

async function loadKind() {
  try {
    const kinds = await api("/api/kinds");
    const kind = (kinds || []).find((k) => k.name === KIND);
    if (kind && kind.schema && kind.schema.properties) {
      kindDescription = kind.description || "";
      buildOptions(kind.schema);
      return;
    }
  } catch {
    /* fall back to the built-in options */
  }
  buildOptions(FALLBACK_SCHEMA);
}

// ------------------------------------------------------------------ running

/** The spec the options describe, or null until a dataset is chosen. */
function currentSpec() {
  if (!dataset) return null;
  const spec = { dataset: dataset.id };
  for (const f of fields) {
    const [include, value] = f.read();
    if (include) spec[f.key] = value;
  }
  return spec;
}

// The estimate follows the options and the dataset (its size sets most of the cost).
const estimator = attachEstimate($("cost-estimate"), KIND, currentSpec);

async function startRun(event) {
  event.preventDefault();
  const spec = currentSpec();
  if (!spec) return;
  const button = $("run-btn");
  clearError($("run-error"));
  button.disabled = true;
  $("run-status").textContent = "Starting…";
  // Over this server's time or memory limit: refused here, with what to lower.
  const cost = await estimator.check();
  if (cost && !cost.within_limits) {
    $("run-status").textContent = "";
    const box = $("run-error");
    box.replaceChildren(el("strong", {}, "This analysis is over the server’s limits."),
      el("ul", { class: "problems" }, ...cost.problems.map((p) => el("li", {}, p))));
    box.hidden = false;
    button.disabled = false;
    return;
  }
  try {
    const run = await api("/api/runs", { method: "POST", body: { kind: KIND, spec } });
    $("run-status").textContent = "Started; opening the run…";
    location.assign(`/runs/${encodeURIComponent(run.id)}`);
  } catch (err) {
    $("run-status").textContent = "";
    showError($("run-error"), err, "The analysis could not be started.");
    button.disabled = false;
  }
}

// ------------------------------------------------------------------ start-up

async function preload() {
  const id = new URL(location.href).searchParams.get("dataset");
  if (!id) return;
  try {
    const ds = await api(`/api/datasets/${encodeURIComponent(id)}`);
    if (ds.format === "distribution") {
      // One column of values (uploaded for spine_fit): nothing here to compare before/after.
      const box = $("upload-error");
      showError(box, new ApiError(422, `Dataset ${shortId(ds.id)} is a single distribution of ${ds.n_pairs} values, not weights before and after learning, so the geometry analysis cannot read it.`, "Fit it with the distribution fit instead, or upload weights before and after here."), "This dataset cannot be analysed here.");
      box.append(el("p", {}, el("a", { href: `/new/spine_fit?dataset=${encodeURIComponent(ds.id)}` }, "Fit this distribution")));
      return;
    }
    if (ds.format === "activations" || ds.format === "checkpoint") {
      const what = ds.format === "activations" ? "activation matrices" : "one model checkpoint’s weight matrices";
      showError($("upload-error"), new ApiError(422, `Dataset ${shortId(ds.id)} holds ${what}, not weights before and after learning, so the geometry analysis cannot read it.`, "Upload weights before and after here, or open the dataset from an eigenspectrum experiment."), "This dataset cannot be analysed here.");
      return;
    }
    setDataset(ds);
  } catch (err) {
    showError($("upload-error"), err, "Could not open that dataset.");
  }
}

setupDropzone();
$("upload-btn").addEventListener("click", upload);
$("example-btn").addEventListener("click", loadExample);
$("run-form").addEventListener("submit", startRun);
$("run-form").addEventListener("input", () => dataset && estimator.refresh());
$("run-form").addEventListener("change", () => dataset && estimator.refresh());
showVersion();
await loadKind();
await preload();
