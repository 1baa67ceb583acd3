// Upload of named 2-D matrices for a spec field whose JSON Schema says
// `"x-upload": "activations"` (samples × features per layer, POST /api/datasets/activations)
// or `"x-upload": "checkpoint"` (one model's weight layers, out × in,
// POST /api/datasets/checkpoint).
//
// The field keeps its text input (the dataset id, or an id picked from the list); next to it:
// a drop zone / file picker that uploads the file at once, the accepted formats, the server's
// problem and fix when a file is refused, and the stored dataset's layers (name,
// rows × cols, how a layer of more than two dimensions was reshaped, its values' range).

import {
  api, ApiError, clearError, el, fmtBytes, fmtInt, fmtNum, fmtPM, shortId, showError, wireDropZone,
} from "./api.js";
import { uploadIcon } from "./distribution.js";

const ID_FORM = /^[A-Za-z0-9_-]{1,40}$/;
const EXAMPLE = "example"; // built-in data the eigenspectrum kinds generate (syngeo/examples/spectra.py)

const KINDS = {
  activations: {
    url: "/api/datasets/activations",
    accept: ".npy,.npz,.safetensors,.pt,.pth,.bin,.ckpt,.csv,.tsv,.txt,text/csv,text/tab-separated-values,text/plain",
    drop: "Drop a file of activations here",
    formats: "Samples × features · .npy · .npz · safetensors · PyTorch · CSV",
    holds: "activation matrices (samples × features)",
    example: "Synthetic activations with known answers: 4,000 samples of 200 features whose covariance spectrum is i^−1 (α = 1), and a layer whose spectrum decays exponentially (which the fits flag).",
    dims: "Samples × features",
    caption: "Layers of the uploaded activations: each matrix is read as samples (rows) × features (columns); mean ± standard deviation of its entries, with the range below.",
    help: () => [
      el("li", {}, el("strong", {}, "NumPy"), ": one ", el("code", {}, ".npy"), " array of shape (samples, features) — a layer named after the file — or an ", el("code", {}, ".npz"), " with one named array per layer (", el("code", {}, "np.savez(path, layer1=a1, layer2=a2)"), "). Never unpickled."),
      el("li", {}, el("strong", {}, "safetensors / PyTorch"), " (", el("code", {}, ".safetensors"), ", ", el("code", {}, ".pt"), ", ", el("code", {}, ".pth"), ", ", el("code", {}, ".bin"), ", ", el("code", {}, ".ckpt"), "): one named tensor per layer, or one tensor; PyTorch files are read with ", el("code", {}, "weights_only=True"), "."),
      el("li", {}, el("strong", {}, "CSV / TSV / TXT"), ": one row per sample, one column per feature; a header row is optional, lines starting with ", el("code", {}, "#"), " are skipped."),
    ],
    note: "Arrays of shape (n, C, H, W) are read as n × C·H·W. Each layer needs at least 10 samples and 10 features, all finite. 1-D arrays in a file with several arrays (e.g. labels) are left out.",
  },
  checkpoint: {
    url: "/api/datasets/checkpoint",
    accept: ".safetensors,.pt,.pth,.bin,.ckpt,.npz",
    drop: "Drop a model checkpoint here",
    formats: "One file · safetensors · PyTorch state dict · .npz",
    holds: "one model checkpoint’s weight matrices",
    example: "A synthetic checkpoint with known answers: a 256 × 128 pure-noise layer (all of its spectrum inside the Marchenko–Pastur bulk) and a 200 × 300 layer with three planted singular values beyond it.",
    dims: "Out × in",
    caption: "Weight layers of the uploaded checkpoint, each read as an out × in matrix; mean ± standard deviation of its entries, with the range below.",
    help: () => [
      el("li", {}, el("strong", {}, "safetensors"), " or a ", el("strong", {}, "PyTorch state dict"), " (", el("code", {}, "torch.save(model.state_dict(), path)"), "; ", el("code", {}, ".pt"), ", ", el("code", {}, ".pth"), ", ", el("code", {}, ".bin"), ", ", el("code", {}, ".ckpt"), "), read with ", el("code", {}, "weights_only=True"), ": nothing is ever unpickled."),
      el("li", {}, el("strong", {}, "NumPy"), ": an ", el("code", {}, ".npz"), " with one named array per layer."),
    ],
    note: "Weight layers are the tensors of two or more dimensions that are not biases or normalisation parameters; convolutions (out, in, kh, kw) are read as out × in·kh·kw. Layers with a side shorter than 2 are left out.",
  },
};

function layersTable(ds, spec, base) {
  const layers = ds.layers || [];
  const head = el("thead", {}, el("tr", {},
    el("th", { scope: "col" }, "Layer"),
    el("th", { scope: "col", class: "num" }, spec.dims),
    el("th", { scope: "col" }, "Stored shape"),
    el("th", { scope: "col", class: "num" }, "Mean ± sd"),
  ));
  const body = el("tbody", {}, ...layers.map((l) => el("tr", {},
    el("th", { scope: "row", class: "mono" }, l.name),
    el("td", { class: "num" }, `${fmtInt(l.rows)} × ${fmtInt(l.cols)}`),
    el("td", { class: "mono" }, Array.isArray(l.shape) ? l.shape.join(" × ") : "–",
      l.reshaped ? el("br") : null, l.reshaped ? el("span", { class: "small muted reshaped" }, l.reshaped) : null),
    el("td", { class: "num" }, fmtPM(l.mean, l.std), el("br"), el("span", { class: "small muted" }, `${fmtNum(l.min)} to ${fmtNum(l.max)}`)),
  )));
  return el("div", { class: "table-wrap" }, el("table", { class: "data", id: `${base}-layers` }, el("caption", {}, spec.caption), head, body));
}

/**
 * Add the upload controls to form field `field` (from form.js buildForm); `want` is
 * "activations" or "checkpoint". Returns {refresh()}: show the layers of whatever dataset
 * the field holds now (after the form was filled in from an earlier run or a link).
 */
export function attachMatrixUpload(field, want) {
  const spec = KINDS[want];
  if (!spec) throw new Error(`no matrix upload of kind ${want}`);
  const base = field.control.id;
  const ids = {
    zone: `${base}-dropzone`, input: `${base}-file`, status: `${base}-upload-status`,
    error: `${base}-upload-error`, summary: `${base}-summary`, help: `${base}-format-help`,
    includeAll: `${base}-include-all`, example: `${base}-example`,
  };
  const input = el("input", { type: "file", id: ids.input, class: "sr-only", accept: spec.accept, "aria-describedby": ids.help });
  const zone = el(
    "label",
    { class: "dropzone", id: ids.zone, for: ids.input },
    uploadIcon(),
    el("strong", {}, spec.drop),
    el("span", {}, "or ", el("span", { class: "btn-link" }, "choose a file"), " to upload it"),
    el("span", { class: "small" }, spec.formats),
    input,
  );
  const includeAll = want === "checkpoint"
    ? el("input", { type: "checkbox", id: ids.includeAll })
    : null;
  const status = el("span", { id: ids.status, class: "small muted", role: "status", "aria-live": "polite" });
  const exampleBtn = el("button", { type: "button", class: "btn btn-small", id: ids.example }, "Use the example");
  const errorBox = el("div", { id: ids.error, class: "alert", role: "alert", hidden: true });
  const summary = el("div", { id: ids.summary, hidden: true, "aria-live": "polite" });
  const help = el(
    "div",
    { class: "format-help", id: ids.help },
    el("details", {}, el("summary", {}, "Accepted formats"), el("ul", {}, ...spec.help()),
      el("p", { class: "small", style: "margin:0.4rem 0 0" }, spec.note, " One file per dataset.")),
  );
  const panel = el(
    "div",
    { class: "matrix-upload", dataset: { upload: want } },
    zone,
    el("div", { class: "upload-actions" },
      el("span", { class: "or" }, "or"), exampleBtn,
      includeAll ? el("label", { class: "small", for: ids.includeAll }, includeAll, " Include every tensor of 2 or more dimensions (normalisation and other non-weight names too)") : null,
      status),
    help,
    errorBox,
    summary,
  );
  field.node.classList.add("field-wide");
  field.node.append(panel);

  let shown = null; // the dataset id whose layers are on screen
  let busy = false;

  function showExample() {
    shown = EXAMPLE;
    summary.replaceChildren(el("div", { class: "notice" },
      el("strong", {}, "The built-in example"),
      el("p", { class: "small", style: "margin:0" }, spec.example)));
    summary.hidden = false;
  }

  function showSummary(ds) {
    shown = ds.id;
    const file = (ds.files || [])[0];
    const layers = ds.layers || [];
    const skipped = ds.skipped || [];
    const parts = [
      el("div", { class: "notice" },
        el("strong", {}, "Dataset ", el("span", { id: `${base}-dataset-title` }, `“${ds.name || shortId(ds.id)}”`), " is ready"),
        el("p", { class: "small", style: "margin:0" }, el("code", {}, ds.id),
          ` · ${fmtInt(layers.length)} ${layers.length === 1 ? "layer" : "layers"} · ${fmtInt(ds.n_pairs)} values`,
          file ? ` · ${file.name} (${fmtBytes(file.size)})` : ""),
        // The file's own SHA-256 (what `sha256sum` prints).
        file && file.sha256 ? el("p", { class: "small muted", style: "margin:0.3rem 0 0" }, "File SHA-256 ", el("code", {}, file.sha256)) : null,
      ),
      layersTable(ds, spec, base),
      skipped.length
        ? el("details", { style: "margin-top:0.75rem" },
          el("summary", {}, `${skipped.length} ${skipped.length === 1 ? "entry" : "entries"} left out`),
          el("ul", { class: "small mono" }, ...skipped.map((s) => el("li", {}, s))))
        : null,
    ];
    summary.replaceChildren(...parts.filter(Boolean));
    summary.hidden = false;
  }

  function hideSummary() {
    shown = null;
    summary.hidden = true;
    summary.replaceChildren();
  }

  // A value set from here is news to the form's listeners (e.g. its cost estimate).
  const announce = () => field.control.dispatchEvent(new Event("input", { bubbles: true }));

  async function upload(files) {
    const list = Array.from(files || []);
    if (!list.length || busy) return;
    clearError(errorBox);
    if (list.length > 1) {
      showError(errorBox, new ApiError(422, `${list.length} files were dropped; this upload is one file.`, "Put several layers in one .npz, safetensors or PyTorch file, and drop that."), "The upload was not accepted.");
      return;
    }
    const file = list[0];
    const form = new FormData();
    form.append("files", file, file.name);
    if (includeAll && includeAll.checked) form.append("include_all", "true");
    busy = true;
    input.disabled = true;
    status.textContent = `Uploading ${file.name}…`;
    try {
      const ds = await api(spec.url, { method: "POST", form });
      field.set(ds.id);
      field.clearError();
      announce();
      status.textContent = "";
      showSummary(ds);
    } catch (err) {
      status.textContent = "";
      showError(errorBox, err, `${file.name} was not accepted.`);
    } finally {
      busy = false;
      input.disabled = false;
    }
  }

  async function refresh() {
    const value = field.control.value.trim();
    if (value === shown) return;
    clearError(errorBox);
    if (value.toLowerCase() === EXAMPLE) return showExample();
    if (!ID_FORM.test(value)) return hideSummary(); // empty, or a path (CLI only)
    try {
      const ds = await api(`/api/datasets/${encodeURIComponent(value)}`);
      if (field.control.value.trim() !== value) return; // typed on meanwhile
      if (ds.format !== want) {
        hideSummary();
        showError(errorBox, new ApiError(422, `Dataset ${shortId(ds.id)} (format ${ds.format}) does not hold ${spec.holds}.`, "Upload a file here and use the dataset it gives."), "This dataset cannot be read here.");
        return;
      }
      showSummary(ds);
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
    showExample();
  });
  field.control.addEventListener("change", refresh);
  return { refresh };
}
