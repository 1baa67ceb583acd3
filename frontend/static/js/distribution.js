// Upload of one observed distribution (e.g. spine volumes) for a spec field whose JSON
// Schema says `"x-upload": "distribution"` (spine_fit's `dataset`).
//
// The field keeps its text input (the dataset id, "example", or an id picked from the list);
// next to it: a drop zone / file picker that uploads the file at once
// (POST /api/datasets/distribution), a button for the bundled example, the accepted
// formats, the server's problem and fix when a file is refused, and a summary of the
// chosen dataset (n, min, median, max, mean ± sd).

import {
  api, ApiError, clearError, el, fmtBytes, fmtInt, fmtNum, fmtPM, shortId, showError, wireDropZone,
} from "./api.js";

export const UPLOAD_URL = "/api/datasets/distribution";
const EXAMPLE = "example";
const ACCEPT = ".csv,.tsv,.txt,.npy,text/csv,text/tab-separated-values,text/plain";
const ID_FORM = /^[A-Za-z0-9_-]{1,40}$/;

/** The upload arrow of the drop zones (shared with matrices.js). */
export function uploadIcon() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  for (const [k, v] of Object.entries({ width: "26", height: "26", viewBox: "0 0 24 24", fill: "none", stroke: "currentColor", "stroke-width": "1.8", "stroke-linecap": "round", "stroke-linejoin": "round", "aria-hidden": "true" })) svg.setAttribute(k, v);
  for (const d of ["M12 16V4m0 0-4.5 4.5M12 4l4.5 4.5", "M4 15v3a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-3"]) {
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

function formatHelp(id) {
  return el(
    "div",
    { class: "format-help", id },
    el(
      "details",
      {},
      el("summary", {}, "Accepted formats"),
      el(
        "ul",
        {},
        el("li", {}, el("strong", {}, "CSV / TSV / TXT"), ": one column of values, one per row; a header row (e.g. ", el("code", {}, "volume_um3"), ") is optional, lines starting with ", el("code", {}, "#"), " are skipped. With ", el("code", {}, ";"), " as separator a decimal comma is read."),
        el("li", {}, el("strong", {}, "NumPy"), ": a 1-D ", el("code", {}, ".npy"), " array (saved with ", el("code", {}, "np.save"), "; never unpickled)."),
      ),
      el("p", { class: "small", style: "margin:0.4rem 0 0" }, "At least 20 values, all finite and greater than zero (e.g. spine volumes in µm³). One file per dataset."),
    ),
  );
}

function statsFacts(s) {
  const fact = (label, value) => el("div", {}, el("dt", {}, label), el("dd", {}, value));
  return el(
    "dl",
    { class: "facts" },
    fact("Values", fmtInt(s.n)),
    fact("Min", fmtNum(s.min)),
    fact("Median", fmtNum(s.median)),
    fact("Max", fmtNum(s.max)),
    s.mean !== undefined ? fact("Mean ± sd", fmtPM(s.mean, s.std)) : null,
  );
}

/**
 * Add the upload controls to form field `field` (from form.js buildForm).
 * Returns {refresh()}: show the summary of whatever the field holds now (after the form
 * was filled in from an earlier run or a link).
 */
export function attachDistributionUpload(field) {
  const base = field.control.id;
  const ids = {
    zone: `${base}-dropzone`, input: `${base}-file`, example: `${base}-example`,
    status: `${base}-upload-status`, error: `${base}-upload-error`, summary: `${base}-summary`,
    help: `${base}-format-help`,
  };
  const input = el("input", { type: "file", id: ids.input, class: "sr-only", accept: ACCEPT, "aria-describedby": ids.help });
  const zone = el(
    "label",
    { class: "dropzone", id: ids.zone, for: ids.input },
    uploadIcon(),
    el("strong", {}, "Drop a file of values here"),
    el("span", {}, "or ", el("span", { class: "btn-link" }, "choose a file"), " to upload it"),
    el("span", { class: "small" }, "One column · CSV · TSV · TXT · 1-D .npy"),
    input,
  );
  const exampleBtn = el("button", { type: "button", class: "btn btn-small", id: ids.example }, "Use the example");
  const status = el("span", { id: ids.status, class: "small muted", role: "status", "aria-live": "polite" });
  const errorBox = el("div", { id: ids.error, class: "alert", role: "alert", hidden: true });
  const summary = el("div", { id: ids.summary, class: "notice", hidden: true, "aria-live": "polite" });
  const panel = el(
    "div",
    { class: "distribution-upload" },
    zone,
    el("div", { class: "upload-actions" }, el("span", { class: "or" }, "or"), exampleBtn, status),
    formatHelp(ids.help),
    errorBox,
    summary,
  );
  field.node.classList.add("field-wide");
  field.node.append(panel);

  let shown = null; // the dataset value whose summary is on screen
  let busy = false;

  function showSummary(value, ds) {
    shown = value;
    if (value === EXAMPLE) {
      summary.replaceChildren(
        el("strong", {}, "The bundled example"),
        el("p", { class: "small", style: "margin:0" }, "1,961 synthetic spine volumes (µm³) drawn from the paper’s negative-entropy fit (§4.4, Fig. 5)."),
      );
    } else {
      const file = (ds.files || [])[0];
      summary.replaceChildren(
        el("strong", {}, "Dataset ", el("span", { id: `${base}-dataset-title` }, `“${ds.name || shortId(ds.id)}”`), " is ready"),
        el("p", { class: "small", style: "margin:0" }, el("code", {}, ds.id), file ? ` · ${file.name} (${fmtBytes(file.size)})` : ""),
        statsFacts(ds.distribution || { n: ds.n_pairs }),
        // The file's own SHA-256 (what `sha256sum` prints, and what the result records).
        file && file.sha256 ? el("p", { class: "small muted", style: "margin:0.5rem 0 0" }, "File SHA-256 ", el("code", {}, file.sha256)) : null,
      );
    }
    summary.hidden = false;
  }

  function hideSummary() {
    shown = null;
    summary.hidden = true;
    summary.replaceChildren();
  }

  async function upload(files) {
    const list = Array.from(files || []);
    if (!list.length || busy) return;
    clearError(errorBox);
    if (list.length > 1) {
      showError(errorBox, new ApiError(422, `${list.length} files were dropped; a distribution is one file.`, "Drop or choose one file holding one column of values."), "The upload was not accepted.");
      return;
    }
    const file = list[0];
    const form = new FormData();
    form.append("files", file, file.name);
    busy = true;
    input.disabled = true;
    exampleBtn.disabled = true;
    status.textContent = `Uploading ${file.name}…`;
    try {
      const ds = await api(UPLOAD_URL, { method: "POST", form });
      field.set(ds.id);
      field.clearError();
      announce();
      status.textContent = "";
      showSummary(ds.id, ds);
    } catch (err) {
      status.textContent = "";
      showError(errorBox, err, `${file.name} was not accepted.`);
    } finally {
      busy = false;
      input.disabled = false;
      exampleBtn.disabled = false;
    }
  }

  // A value set from here is news to the form's listeners (e.g. its cost estimate).
  const announce = () => field.control.dispatchEvent(new Event("input", { bubbles: true }));

  async function refresh() {
    const value = field.control.value.trim();
    if (value === shown) return;
    clearError(errorBox);
    if (value.toLowerCase() === EXAMPLE) return showSummary(EXAMPLE);
    if (!ID_FORM.test(value)) return hideSummary(); // empty, or a path (CLI only)
    try {
      const ds = await api(`/api/datasets/${encodeURIComponent(value)}`);
      if (field.control.value.trim() !== value) return; // typed on meanwhile
      if (ds.format !== "distribution") {
        hideSummary();
        showError(errorBox, new ApiError(422, `Dataset ${shortId(ds.id)} holds weights before and after learning, not a single distribution.`, "Upload a file of values here, or use the example."), "This dataset cannot be fitted.");
        return;
      }
      showSummary(value, ds);
    } catch (err) {
      if (field.control.value.trim() !== value) return;
      hideSummary();
      if (err instanceof ApiError && err.status === 404) showError(errorBox, err, "No such dataset.");
    }
  }

  input.addEventListener("change", () => {
    upload(input.files);
    input.value = ""; // choosing the same file again still fires "change"
  });
  wireDropZone(zone, upload);
  exampleBtn.addEventListener("click", () => {
    clearError(errorBox);
    field.set(EXAMPLE);
    field.clearError();
    announce();
    showSummary(EXAMPLE);
  });
  field.control.addEventListener("change", refresh);
  return { refresh };
}
