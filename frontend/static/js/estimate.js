// The cost estimate of a form's spec: what the run would take on one CPU worker (time and
// memory, POST /api/kinds/{kind}/estimate) and whether this server's limits allow it. It
// updates as the fields change; a form asks `check()` before submitting and refuses a spec
// over a limit with the server's own words (which say what to lower).

import { api, el } from "./api.js";

const DELAY_MS = 300; // wait for typing to pause before asking the server

/**
 * `box`: the element that shows the estimate (a live region). `kindName`: the kind.
 * `readSpec()`: the current spec, or null while the fields cannot make one (the estimate
 * then asks for them to be fixed, or for a dataset).
 * Returns {refresh(), check()}: refresh() re-estimates soon; check() resolves to the
 * estimate of the current spec (null when it could not be made).
 */
export function attachEstimate(box, kindName, readSpec) {
  let timer = null;
  let asked = 0; // answers to older requests are dropped
  let latest = null; // {key, promise}

  function show(text, { over = false, problems = [], note = "" } = {}) {
    box.classList.toggle("over-limit", over);
    const parts = [el("strong", {}, over ? "Over this server’s limits: " : "Estimate: "), text];
    if (note) parts.push(el("span", { class: "muted estimate-note" }, ` ${note}`));
    if (problems.length) parts.push(el("ul", { class: "problems" }, ...problems.map((p) => el("li", {}, p))));
    box.replaceChildren(...parts);
    box.hidden = false;
  }

  function estimate(spec) {
    const key = JSON.stringify(spec);
    if (latest && latest.key === key) return latest.promise;
    const n = ++asked;
    const promise = api(`/api/kinds/${encodeURIComponent(kindName)}/estimate`, { method: "POST", body: spec })
      .then((cost) => {
        if (n === asked) {
          const text = `${cost.text} (limits: ${cost.limits_text}).`;
          const note = `For ${cost.work}. Times vary with the machine and its load.`;
          if (cost.within_limits) show(text, { note });
          else show(text, { over: true, problems: cost.problems });
        }
        return cost;
      })
      .catch((err) => {
        // A spec the server cannot estimate: it says why when the run is submitted.
        if (n === asked) show(`not available (${err.problem || err.message}).`);
        if (latest && latest.key === key) latest = null;
        return null;
      });
    latest = { key, promise };
    return promise;
  }

  function current() {
    const spec = readSpec();
    if (!spec) {
      asked += 1;
      show("fill in the fields above for an estimate of the run’s time and memory.");
      return Promise.resolve(null);
    }
    return estimate(spec);
  }

  return {
    refresh() {
      clearTimeout(timer);
      timer = setTimeout(current, DELAY_MS);
    },
    check() {
      clearTimeout(timer);
      return current();
    },
  };
}
