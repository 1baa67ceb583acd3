// /new: every experiment kind as a card. /new/{kind}: the kind's form, generated from its
// JSON Schema (GET /api/kinds); submitting queues a run (POST /api/runs) and opens it.
// /new/{kind}?from={run id} fills the form with that run's spec (its seed included);
// /new/{kind}?dataset={id} fills in the dataset. A field whose schema says
// `"x-upload": "distribution"` (spine_fit's dataset) gets an upload panel (distribution.js);
// `"x-upload": "activations"` or `"checkpoint"` one for matrices (matrices.js).

import { api, ApiError, clearError, el, shortId, showError, showVersion } from "./api.js";
import { attachDistributionUpload } from "./distribution.js";
import { attachMatrixUpload } from "./matrices.js";
import { attachEstimate } from "./estimate.js";
import { buildForm, fieldsNamedIn } from "./form.js";

const $ = (id) => document.getElementById(id);
const segments = location.pathname.replace(/\/+$/, "").split("/").filter(Boolean);
const kindName = segments.length > 1 ? decodeURIComponent(segments[1]) : "";

// Kinds that read uploaded weights have a guided page of their own.
const GUIDED = { geometry: "/analyze" };

function kindHref(kind) {
  return GUIDED[kind.name] || `/new/${encodeURIComponent(kind.name)}`;
}

// ------------------------------------------------------------------ the list of kinds

function renderCards(kinds) {
  const list = $("kind-cards");
  list.replaceChildren(
    ...kinds.map((kind) => {
      const guided = Boolean(GUIDED[kind.name]);
      const uploads = Object.values((kind.schema && kind.schema.properties) || {}).some((p) => p && p["x-upload"]);
      const headingId = `kind-${kind.name}-title`;
      return el(
        "li",
        { class: "card kind-card", dataset: { kind: kind.name } },
        el("h2", { id: headingId }, el("a", { href: kindHref(kind), class: "kind-link" }, kind.title || kind.name)),
        kind.description ? el("p", { class: "kind-description" }, kind.description) : null,
        el(
          "p",
          { class: "kind-foot small" },
          el("code", {}, kind.name),
          el("span", { class: "kind-tag" }, guided ? "Upload weights" : uploads ? "Upload data" : "Simulation"),
          el("span", { class: "kind-go", "aria-hidden": "true" }, guided ? "Open the upload page →" : "Set parameters →"),
        ),
      );
    }),
  );
  $("kind-list").setAttribute("aria-busy", "false");
  $("kind-list").hidden = false;
}

function showList(kinds) {
  renderCards(kinds);
  if (!kinds.length) {
    $("kind-cards").replaceChildren(el("li", { class: "empty" }, "No experiment kinds are registered on this server."));
  }
}

function showNotFound(kinds) {
  document.title = "Unknown experiment kind · Synaptic Geometry Lab";
  $("page-title").textContent = "Unknown experiment kind";
  $("page-lede").textContent = "Choose one of the experiments below instead.";
  $("breadcrumb").replaceChildren(el("a", { href: "/" }, "Home"), " / ", el("a", { href: "/new" }, "New simulation"), " / Not found");
  const names = kinds.map((k) => k.name).join(", ");
  showError(
    $("page-error"),
    new ApiError(404, `There is no experiment kind “${kindName}” on this server.`, names ? `The kinds there are: ${names}.` : ""),
    "Not found",
  );
  showList(kinds);
}

// ------------------------------------------------------------------ the form of one kind

let form = null;
let kind = null;
let uploaders = []; // {refresh()} of the upload panels of fields that take an upload
let estimator = null; // the cost estimate under the form (estimate.js)

/** The kind of upload a spec field takes ("distribution", "activations", "checkpoint"), or
 * undefined. */
function uploadOf(key) {
  const prop = kind && kind.schema && kind.schema.properties ? kind.schema.properties[key] : null;
  return prop ? prop["x-upload"] : undefined;
}

function refreshUploads() {
  for (const u of uploaders) u.refresh();
}

function linkToField(f) {
  return el("a", {
    href: `#${f.control.id}`,
    onclick: (e) => {
      e.preventDefault();
      f.focus();
    },
  }, f.label);
}

function showFieldProblems(box, heading, problems) {
  box.replaceChildren(
    el("strong", {}, heading),
    el("ul", { class: "problems" }, ...problems.map((p) => el("li", {}, linkToField(form.field(p.key)), ` ${p.message}`))),
  );
  box.hidden = false;
}

/** A refused run: the server's words, and each field it names marked and linked. */
function showServerError(err) {
  const box = $("form-error");
  const heading = err instanceof ApiError && err.status === 422
    ? "The server did not accept these parameters."
    : "The run could not be started.";
  showError(box, err, heading);
  const named = fieldsNamedIn(err instanceof ApiError ? `${err.problem}; ${err.detail}` : "")
    .filter((n) => form.field(n.key));
  if (!named.length) return;
  const list = el("p", { class: "named-fields" }, named.length === 1 ? "Field: " : "Fields: ");
  named.forEach((n, i) => {
    const f = form.field(n.key);
    f.showError(`${f.label}: ${n.message}`);
    if (i) list.append(", ");
    list.append(linkToField(f));
  });
  box.append(list);
  form.field(named[0].key).focus();
}

async function submit(event) {
  event.preventDefault();
  const box = $("form-error");
  const status = $("submit-status");
  clearError(box);
  const { spec, errors } = form.collect();
  if (errors.length) {
    showFieldProblems(box, errors.length === 1 ? "Check this field:" : `Check these ${errors.length} fields:`,
      errors.map((e) => ({ key: e.key, message: e.message.slice(e.label.length + 1) })));
    form.field(errors[0].key).focus();
    status.textContent = "";
    return;
  }
  const button = $("submit-btn");
  button.disabled = true;
  status.textContent = "Starting…";
  // Over this server's time or memory limit: refused here, with what to lower.
  const cost = await estimator.check();
  if (cost && !cost.within_limits) {
    status.textContent = "";
    box.replaceChildren(el("strong", {}, "This run is over the server’s limits."),
      el("ul", { class: "problems" }, ...cost.problems.map((p) => el("li", {}, p))));
    box.hidden = false;
    button.disabled = false;
    return;
  }
  try {
    const run = await api("/api/runs", { method: "POST", body: { kind: kind.name, spec } });
    status.textContent = "Started; opening the run…";
    location.assign(`/runs/${encodeURIComponent(run.id)}`);
  } catch (err) {
    status.textContent = "";
    showServerError(err);
    button.disabled = false;
  }
}

// Dataset formats that are not before/after weights.
const OTHER_UPLOADS = new Set(["distribution", "activations", "checkpoint"]);

/** Suggest uploaded datasets of the right type in a text field named `dataset` (best effort). */
async function offerDatasets() {
  const f = form.field("dataset");
  if (!f || f.control.tagName !== "INPUT" || f.control.type !== "text") return;
  const wanted = uploadOf("dataset");
  try {
    const all = await api(`/api/datasets?limit=50${wanted ? `&format=${encodeURIComponent(wanted)}` : ""}`);
    // Without an x-upload the field takes before/after weights: no other uploads are offered.
    const datasets = wanted ? all : all.filter((ds) => !OTHER_UPLOADS.has(ds.format));
    const list = el("datalist", { id: `${f.control.id}-list` },
      ...datasets.map((ds) => el("option", { value: ds.id }, ds.name || shortId(ds.id))));
    f.node.append(list);
    f.control.setAttribute("list", list.id);
  } catch {
    /* typing the id still works */
  }
}

/** A query value as the form wants it: a number or JSON value where it parses, else text. */
function queryValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * ?from={run id}: start from an earlier run's parameters; ?dataset={id}: use that dataset;
 * ?spec={JSON} and ?{field}={value}: these values (a phase-diagram cell opens its run so).
 */
async function prefill() {
  const params = new URL(location.href).searchParams;
  const dataset = params.get("dataset");
  if (dataset && form.field("dataset")) form.field("dataset").set(dataset);
  const given = {};
  if (params.get("spec")) {
    try {
      Object.assign(given, JSON.parse(params.get("spec")));
    } catch {
      showError($("page-error"), new Error("The link's spec parameter is not valid JSON."), "Could not fill in the form.");
    }
  }
  for (const [key, value] of params) {
    if (!["spec", "from", "dataset"].includes(key) && form.field(key)) given[key] = queryValue(value);
  }
  if (Object.keys(given).length) {
    form.setValues(given);
    $("submit-status").textContent = "Filled in from the link (same seed and grid positions: the same simulation).";
  }
  const from = params.get("from");
  if (!from) return;
  const status = $("submit-status");
  try {
    const run = await api(`/api/runs/${encodeURIComponent(from)}`);
    if (run.kind !== kind.name) throw new Error(`Run ${shortId(run.id)} is a “${run.kind}” run, not “${kind.name}”.`);
    form.setValues(run.spec || {});
    status.textContent = `Filled in from run ${shortId(run.id)}${run.spec && run.spec.seed !== undefined ? " (same seed: same result; clear the seed for a new one)" : ""}.`;
  } catch (err) {
    showError($("page-error"), err, "Could not fill in the earlier run’s parameters.");
  }
}

async function showForm(found) {
  kind = found;
  const title = kind.title || kind.name;
  document.title = `${title} · New simulation · Synaptic Geometry Lab`;
  $("page-title").textContent = title;
  $("page-lede").textContent = kind.description || "";
  $("breadcrumb").replaceChildren(el("a", { href: "/" }, "Home"), " / ", el("a", { href: "/new" }, "New simulation"), " / ", title);
  if (GUIDED[kind.name]) {
    const notice = $("kind-notice");
    notice.replaceChildren(
      "This experiment reads uploaded weights: ",
      el("a", { href: GUIDED[kind.name] }, "the upload page"),
      " guides you through it. The form below takes a dataset id.",
    );
    notice.hidden = false;
  }
  form = buildForm($("spec-fields"), kind.schema, { idPrefix: "spec" });
  uploaders = form.fields
    .filter((f) => ["distribution", "activations", "checkpoint"].includes(uploadOf(f.key)))
    .map((f) => (uploadOf(f.key) === "distribution" ? attachDistributionUpload(f) : attachMatrixUpload(f, uploadOf(f.key))));
  estimator = attachEstimate($("cost-estimate"), kind.name, () => form.preview());
  $("spec-form").addEventListener("submit", submit);
  $("spec-form").addEventListener("input", () => estimator.refresh());
  $("spec-form").addEventListener("change", () => estimator.refresh());
  $("reset-btn").addEventListener("click", () => {
    form.reset();
    estimator.refresh();
    refreshUploads();
    clearError($("form-error"));
    $("submit-status").textContent = "Defaults restored.";
  });
  $("kind-form-card").hidden = false;
  offerDatasets();
  await prefill();
  refreshUploads();
  estimator.refresh();
}

// ------------------------------------------------------------------ start-up

async function main() {
  let kinds;
  try {
    kinds = await api("/api/kinds");
  } catch (err) {
    showError($("page-error"), err, "Could not read the list of experiment kinds.");
    return;
  }
  if (!kindName) return showList(kinds);
  const found = kinds.find((k) => k.name === kindName);
  if (!found) return showNotFound(kinds);
  return showForm(found);
}

showVersion();
await main();
