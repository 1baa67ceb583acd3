// Talking to the JSON API, and small DOM/formatting helpers shared by every page.

/** An API error: HTTP status plus the server's {problem, fix} when it gave them. */
export class ApiError extends Error {
  constructor(status, problem, fix, detail) {
    super(detail || problem || `Request failed (HTTP ${status}).`);
    this.status = status;
    this.problem = problem || "";
    this.fix = fix || "";
    this.detail = detail || "";
  }
}

function describeDetail(detail) {
  // FastAPI validation errors come as a list of {loc, msg}.
  if (Array.isArray(detail)) {
    return detail
      .map((d) => {
        const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== "body").join(".") : "";
        return loc ? `${loc}: ${d.msg}` : d.msg || JSON.stringify(d);
      })
      .join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  return detail ? String(detail) : "";
}

/**
 * Call the API. `body` is sent as JSON, `form` (a FormData) as multipart.
 * Resolves to the parsed JSON (or null for an empty body); rejects with ApiError.
 */
export async function api(path, { method = "GET", body, form, signal } = {}) {
  const init = { method, headers: { Accept: "application/json" }, signal };
  if (form) {
    init.body = form;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server could not be reached.", "Check that it is running, then try again.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.status === 401 && !location.pathname.startsWith("/s/") && location.pathname !== "/login") {
    // Multi-user mode and no valid token: log in, then come back here.
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (!response.ok) {
    if (data && (data.problem || data.detail)) {
      const detail = describeDetail(data.detail);
      throw new ApiError(response.status, data.problem || detail, data.fix, detail);
    }
    const snippet = text && text.length < 300 ? ` ${text}` : "";
    throw new ApiError(response.status, `The server answered HTTP ${response.status}.${snippet}`, "");
  }
  return data;
}

/** Create an element: el("a", {href: "/", class: "x"}, "text", child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Show an ApiError (or any error) in a role="alert" box. */
export function showError(box, err, heading) {
  box.replaceChildren();
  const problem = err instanceof ApiError ? err.problem : err && err.message ? err.message : String(err);
  const fix = err instanceof ApiError ? err.fix : "";
  if (heading) box.append(el("strong", {}, heading));
  box.append(el("p", { class: "problem", style: "margin:0" }, problem));
  if (fix) box.append(el("p", { class: "fix" }, fix));
  box.hidden = false;
}

export function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
}

/**
 * Make `zone` a file drop target that calls `onFiles(fileList)` on a drop, highlights itself
 * while a file is dragged over it, and keeps a file dropped next to it from navigating the
 * page away.
 */
export function wireDropZone(zone, onFiles) {
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("dragover");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.remove("dragover");
    });
  }
  zone.addEventListener("drop", (e) => onFiles(e.dataTransfer && e.dataTransfer.files));
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function statusBadge(status) {
  const s = String(status || "unknown");
  return el("span", { class: `badge badge-${s}` }, s);
}

// The product's one number format; syngeo/formatting.py writes the same strings in Python
// (tests/browser/test_number_format.py checks both on the same values).
const TINY = 1e-4; // below this magnitude an exponent reads better than leading zeros

const isFiniteNumber = (v) => v !== null && v !== undefined && v !== "" && typeof v !== "boolean" && Number.isFinite(Number(v));

function grouped(n, decimals) {
  return n.toLocaleString("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/** `digits` significant digits: "0.0140", "2.50", "770", "12,346", "1.20e-5", "–". */
export function fmtNum(value, digits = 3) {
  if (!isFiniteNumber(value)) return "–";
  const n = Number(value);
  if (n === 0) return "0";
  if (Math.abs(n) < TINY) return n.toExponential(digits - 1);
  if (Math.abs(Number(n.toPrecision(digits))) >= 10 ** digits) return grouped(n, 0);
  return n.toPrecision(digits);
}

/** Format numbers with shared decimals: `digits` significant digits of the largest. */
function fmtShared(values, digits) {
  const largest = Math.max(0, ...values.filter(isFiniteNumber).map((v) => Math.abs(Number(v))));
  if (largest === 0) return values.map((v) => (isFiniteNumber(v) ? "0" : "–"));
  if (largest < TINY) return values.map((v) => fmtNum(v, digits));
  const decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(largest)));
  return values.map((v) => {
    if (!isFiniteNumber(v)) return "–";
    const text = grouped(Number(v), decimals);
    return /^-[0.,]*$/.test(text) ? text.slice(1) : text; // no "-0.000"
  });
}

/** An estimate with its interval: "0.0140 [0.0056, 0.0258]" (the interval alone when the
 * estimate is null; the estimate alone when there is no interval). */
export function fmtInterval(estimate, ci, digits = 3) {
  if (!Array.isArray(ci) || ci.length !== 2) return fmtNum(estimate, digits);
  if (estimate === null || estimate === undefined) {
    const [lo, hi] = fmtShared(ci, digits);
    return `[${lo}, ${hi}]`;
  }
  const [est, lo, hi] = fmtShared([estimate, ...ci], digits);
  return `${est} [${lo}, ${hi}]`;
}

/** An interval alone: "[0.0056, 0.0258]". */
export function fmtCI(ci, digits = 3) {
  if (!Array.isArray(ci) || ci.length !== 2) return "–";
  return fmtInterval(null, ci, digits);
}

/** A mean and its standard deviation: "0.214 ± 0.031". */
export function fmtPM(mean, spread, digits = 3) {
  if (!isFiniteNumber(spread)) return fmtNum(mean, digits);
  const [m, s] = fmtShared([mean, spread], digits);
  return `${m} ± ${s}`;
}

export function fmtInt(value) {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  return Number.isFinite(n) ? n.toLocaleString("en-US") : String(value);
}

export function fmtBytes(n) {
  const v = Number(n);
  if (!Number.isFinite(v)) return "–";
  if (v < 1024) return `${v} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let x = v;
  let i = -1;
  do {
    x /= 1024;
    i += 1;
  } while (x >= 1024 && i < units.length - 1);
  return `${x.toFixed(x < 10 ? 1 : 0)} ${units[i]}`;
}

export function parseDate(value) {
  if (!value) return null;
  // Timestamps without a zone are UTC.
  const s = /[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtDate(value) {
  const d = parseDate(value);
  if (!d) return "–";
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function fmtRelative(value) {
  const d = parseDate(value);
  if (!d) return "–";
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 45) return "just now";
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  if (s < 7 * 86400) return `${Math.round(s / 86400)} d ago`;
  return d.toLocaleDateString(undefined, { dateStyle: "medium" });
}

export function fmtDuration(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function runDuration(run) {
  const a = parseDate(run.started_at);
  if (!a) return null;
  const b = parseDate(run.finished_at) || new Date();
  return (b.getTime() - a.getTime()) / 1000;
}

/** "run_5188a2f0c1d2…" → "run_5188a2f0": the kind prefix plus 8 characters. */
export function shortId(id) {
  const s = String(id || "");
  const m = /^([a-z]{1,8}_)?(.*)$/.exec(s);
  const prefix = m[1] || "";
  return m[2].length > 10 ? prefix + m[2].slice(0, 8) : s;
}

/** Fill the footer's version from /api/health (best effort); in multi-user mode also put
 * the user's name and a log-out button in the navigation (not on share pages). */
export async function showVersion() {
  const slot = document.getElementById("app-version");
  if (slot) {
    try {
      const health = await api("/api/health");
      if (health && health.version) slot.textContent = `v${health.version}`;
    } catch {
      /* the footer can live without it */
    }
  }
  const nav = document.querySelector(".site-nav");
  if (!nav || location.pathname.startsWith("/s/") || location.pathname === "/login") return;
  try {
    const me = await api("/api/me");
    if (!me.auth || document.getElementById("logout-btn")) return;
    const logout = el("button", { type: "button", id: "logout-btn", class: "btn btn-small" }, "Log out");
    logout.addEventListener("click", async () => {
      await api("/api/session", { method: "DELETE" }).catch(() => null);
      location.assign("/login");
    });
    nav.append(el("span", { class: "muted small", id: "account-name" }, me.user), logout);
  } catch {
    /* not logged in: api() has already sent the browser to /login */
  }
}
