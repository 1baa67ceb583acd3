// A form generated from a kind's JSON Schema (pydantic's `Spec.model_json_schema()`).
//
// Each property becomes one control, labelled with the property's title and helped by its
// description: numbers with min/max/step and the default filled in, selects for enums,
// checkboxes for booleans, comma-separated inputs for arrays of numbers or strings, a group
// of checkboxes for arrays of enum values, and a JSON box for anything nested.
// Client-side validation reads the bounds from the controls' own attributes (which come
// from the schema), so it says exactly what the server will say, only sooner.
//
// Empty fields: a nullable field sends null ("none"; for a seed the server then picks one
// and records it); any other optional field is left out so the server uses its default;
// a required field must be filled in.
//
// Fields that do not apply: a property with `"x-applies-when"` is disabled, greyed and left
// out of the spec (so the server uses its default) unless its condition holds for the values
// now in the form. The condition is an object {field: test, …} that holds when every test
// does, or a list of such objects that holds when any one does. A test is a list of values
// (the field's value is one of them; an array field contains one of them) or {"above": x}
// (the value, or some value of an array field, is greater than x).

import { el, fmtInt, fmtNum } from "./api.js";

// ------------------------------------------------------------------ schema helpers

function resolveRef(schema, root) {
  let s = schema || {};
  for (let i = 0; s.$ref && i < 10; i += 1) {
    const name = s.$ref.split("/").pop();
    const target = (root.$defs && root.$defs[name]) || (root.definitions && root.definitions[name]) || {};
    const { $ref, ...rest } = s;
    s = { ...target, ...rest };
  }
  if (Array.isArray(s.allOf) && s.allOf.length === 1) {
    const { allOf, ...rest } = s;
    s = { ...resolveRef(allOf[0], root), ...rest };
  }
  return s;
}

/**
 * Flatten one JSON Schema property into {type, enum, nullable, items, minimum, …}.
 * `anyOf: [X, {type: "null"}]` (an Optional field) becomes X with `nullable: true`;
 * a union of Literals becomes one enum.
 */
export function normalise(prop, root = {}) {
  let s = resolveRef(prop, root);
  let nullable = false;
  const variants = s.anyOf || s.oneOf;
  if (Array.isArray(variants)) {
    const resolved = variants.map((v) => resolveRef(v, root));
    nullable = resolved.some((v) => v.type === "null");
    const rest = resolved.filter((v) => v.type !== "null");
    const { anyOf, oneOf, ...outer } = s;
    if (rest.length === 1) s = { ...rest[0], ...outer };
    else if (rest.length && rest.every((v) => v.const !== undefined || v.enum)) {
      s = { ...outer, type: rest[0].type, enum: rest.flatMap((v) => (v.enum ? v.enum : [v.const])) };
    } else s = { ...rest[0], ...outer, type: rest.length ? rest[0].type : "string" };
  }
  let type = s.type;
  if (Array.isArray(type)) {
    nullable = nullable || type.includes("null");
    type = type.find((t) => t !== "null") || "string";
  }
  const enumValues = s.enum ? s.enum.filter((v) => v !== null) : s.const !== undefined ? [s.const] : null;
  if (s.enum && s.enum.includes(null)) nullable = true;
  const items = type === "array" && s.items && !Array.isArray(s.items) ? normalise(s.items, root) : null;
  return { ...s, type, nullable, enum: enumValues, items };
}

/** Every spec field has a title written for people (tests/test_spec_docs.py). */
function labelFor(key, prop) {
  return prop.title || key.replace(/_/g, " ");
}

// A number from the schema exactly: as many significant digits as it has ("0.3", not "0.300").
const ownDigits = (n) => Math.min(Math.max(n.toExponential().split("e")[0].replace(/\D/g, "").length, 1), 15);

/** A choice in words: the spec's `x-enum-labels` for it ("point masses"), else the value. */
function choiceText(prop, v) {
  const words = prop["x-enum-labels"];
  return words && typeof v === "string" && words[v] ? words[v] : valueText(v);
}

function valueText(v) {
  if (v === null || v === undefined) return "none";
  if (typeof v === "number") return Number.isInteger(v) && Math.abs(v) < 1e15 ? fmtInt(v) : fmtNum(v, ownDigits(v));
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) return v.length ? v.map(valueText).join(", ") : "empty";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** "1 … 100", "≥ 0", "> 0 and < 1" — or "" when unbounded. */
function boundsText(lo, loExclusive, hi, hiExclusive) {
  const has = (x) => x !== null && x !== undefined && x !== "";
  if (has(lo) && has(hi)) {
    if (!loExclusive && !hiExclusive) return `${valueText(Number(lo))} … ${valueText(Number(hi))}`;
    return `${loExclusive ? ">" : "≥"} ${valueText(Number(lo))} and ${hiExclusive ? "<" : "≤"} ${valueText(Number(hi))}`;
  }
  if (has(lo)) return `${loExclusive ? ">" : "≥"} ${valueText(Number(lo))}`;
  if (has(hi)) return `${hiExclusive ? "<" : "≤"} ${valueText(Number(hi))}`;
  return "";
}

function itemCountText(minItems, maxItems) {
  if (minItems !== undefined && maxItems !== undefined) {
    return minItems === maxItems ? `exactly ${minItems} values` : `${minItems}–${maxItems} values`;
  }
  if (minItems !== undefined && minItems > 0) return `at least ${minItems} value${minItems === 1 ? "" : "s"}`;
  if (maxItems !== undefined) return `at most ${maxItems} values`;
  return "";
}

function orList(words) {
  return words.length > 1 ? `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}` : words.join("");
}

// ------------------------------------------------------------------ fields that do not apply

const alternativesOf = (when) => (Array.isArray(when) ? when : [when]);

/** Whether one test of an `x-applies-when` holds for `value` (undefined: unknown, so it does). */
function testHolds(test, value) {
  if (value === undefined) return true;
  const values = Array.isArray(value) ? value : [value];
  if (Array.isArray(test)) return values.some((v) => test.some((t) => JSON.stringify(t) === JSON.stringify(v)));
  if (test && typeof test.above === "number") return values.some((v) => typeof v === "number" && v > test.above);
  return true; // a test this form does not know: leave the field open
}

function conditionHolds(when, valueOf) {
  return alternativesOf(when).some((alt) => Object.entries(alt).every(([key, test]) => testHolds(test, valueOf(key))));
}

/** "Only used when regression solver is “training”." from an `x-applies-when`. */
function conditionText(when, fieldOf) {
  // A label inside a sentence: no unit in parentheses, lower case unless an acronym (MLP).
  const name = (key) => {
    const label = (fieldOf(key) ? fieldOf(key).label : key.replace(/_/g, " ")).replace(/\s*\([^)]*\)$/, "");
    const second = label.charAt(1);
    return second && second !== second.toUpperCase() ? label[0].toLowerCase() + label.slice(1) : label;
  };
  const isArray = (key) => Boolean(fieldOf(key) && fieldOf(key).isArray);
  const phrase = (names, test, array, key) => {
    if (Array.isArray(test)) {
      const words = (v) => (fieldOf(key) ? fieldOf(key).choiceText(v) : valueText(v));
      const values = orList(test.map((v) => `“${words(v)}”`));
      return array ? `${values} is among ${names}` : `${names} is ${values}`;
    }
    return `${array ? "any value of " : ""}${names} is above ${valueText(test.above)}`;
  };
  const alternatives = alternativesOf(when).map((alt) => Object.entries(alt));
  // "a, b or c is above 0" rather than the same test said once per field.
  const [first] = alternatives;
  const sameTest = alternatives.length > 1 && alternatives.every((entries) => entries.length === 1 &&
    JSON.stringify(entries[0][1]) === JSON.stringify(first[0][1]) && isArray(entries[0][0]) === isArray(first[0][0]));
  if (sameTest) return `Only used when ${phrase(orList(alternatives.map((e) => name(e[0][0]))), first[0][1], isArray(first[0][0]), first[0][0])}.`;
  const parts = alternatives.map((entries) => entries.map(([key, test]) => phrase(name(key), test, isArray(key), key)).join(" and "));
  return `Only used when ${orList(parts)}.`;
}

// ------------------------------------------------------------------ checks (read from attributes)

const numAttr = (node, name) => {
  const raw = node.getAttribute(name);
  if (raw === null || raw.trim() === "") return null;
  const n = Number(raw);
  return Number.isFinite(n) ? n : null;
};

/** Why number `n` breaks the bounds written on `node` (min/max or data-item-*), or "". */
function numberProblem(n, node, { item = false } = {}) {
  const p = item ? "data-item-" : "";
  const integer = node.hasAttribute(`${p ? p : "data-"}integer`);
  if (integer && !Number.isInteger(n)) return "must be a whole number";
  const lo = numAttr(node, `${p}min`);
  const hi = numAttr(node, `${p}max`);
  const loEx = node.hasAttribute(`${p ? p : "data-"}exclusive-min`);
  const hiEx = node.hasAttribute(`${p ? p : "data-"}exclusive-max`);
  if (lo !== null && (loEx ? n <= lo : n < lo)) return loEx ? `must be greater than ${valueText(lo)}` : `must be at least ${valueText(lo)}`;
  if (hi !== null && (hiEx ? n >= hi : n > hi)) return hiEx ? `must be less than ${valueText(hi)}` : `must be at most ${valueText(hi)}`;
  const multiple = numAttr(node, `${p ? p : "data-"}multiple-of`);
  if (multiple && Math.abs(n / multiple - Math.round(n / multiple)) > 1e-9) return `must be a multiple of ${valueText(multiple)}`;
  return "";
}

function stringProblem(text, prop) {
  if (prop.minLength !== undefined && text.length < prop.minLength) return `needs at least ${prop.minLength} characters`;
  if (prop.maxLength !== undefined && text.length > prop.maxLength) return `may have at most ${prop.maxLength} characters`;
  if (prop.pattern) {
    try {
      if (!new RegExp(prop.pattern, "u").test(text)) return `does not have the expected form (${prop.pattern})`;
    } catch {
      /* a pattern JavaScript cannot read: the server checks it */
    }
  }
  return "";
}

function countProblem(values, node) {
  const lo = numAttr(node, "data-min-items");
  const hi = numAttr(node, "data-max-items");
  if (lo !== null && values.length < lo) return `needs at least ${lo} value${lo === 1 ? "" : "s"}`;
  if (hi !== null && values.length > hi) return `takes at most ${hi} values`;
  if (node.hasAttribute("data-unique") && new Set(values.map((v) => JSON.stringify(v))).size !== values.length) return "has a value twice";
  return "";
}

// ------------------------------------------------------------------ one field

const OMIT = Symbol("omit");

/**
 * Build the control of one property. Returns {key, label, node, control, focus, read, set,
 * reset, setApplies}. read() → {value} (OMIT: leave it out), or {error: "…"}.
 */
function buildField(key, prop, { idPrefix, required }) {
  const id = `${idPrefix}-${key}`;
  const label = labelFor(key, prop);
  const dflt = prop.default;
  const hasDefault = dflt !== undefined;
  const helpId = `${id}-help`;
  const metaId = `${id}-meta`;
  const errorId = `${id}-error`;
  const appliesId = `${id}-applies`;
  const when = prop["x-applies-when"];
  const describedBy = [prop.description ? helpId : null, when ? appliesId : null, metaId, errorId].filter(Boolean).join(" ");
  const isSeed = key === "seed" || key.endsWith("_seed");

  // What an empty field means, in words (shown under the control); what the value does is
  // the description's to say (for a seed: whether it changes the result).
  let emptyMeaning = "";
  if (isSeed && prop.nullable) emptyMeaning = "Leave empty for a random seed; the one used is recorded with the run.";
  else if (prop.nullable) emptyMeaning = dflt === null || !hasDefault ? "Leave empty for the default." : "Leave empty for none.";
  else if (!required && !hasDefault) emptyMeaning = "Leave empty for the kind’s default.";

  const errorNode = el("span", { class: "field-error", id: errorId, hidden: true });
  const appliesNode = when ? el("span", { class: "applies-note", id: appliesId, hidden: true }) : null;
  const metaBits = [];
  const meta = el("span", { class: "field-meta", id: metaId });
  const help = prop.description ? el("span", { class: "help", id: helpId }, prop.description) : null;
  const defaultBit = hasDefault && dflt !== null && prop.type !== "object"
    ? el("span", { class: "default-value" }, "Default ", el("code", {}, valueText(dflt)))
    : null;

  const emptyRead = () => {
    if (prop.nullable) return { value: null };
    if (required) return { error: "is required" };
    return { value: OMIT };
  };

  const field = { key, label, errorNode, required, when, isArray: prop.type === "array", choiceText: (v) => choiceText(prop, v) };
  let control;

  if (prop.type === "boolean" && !prop.nullable) {
    control = el("input", { type: "checkbox", id, name: key, "aria-describedby": describedBy });
    field.set = (v) => { control.checked = v === true; };
    field.read = () => ({ value: control.checked });
    if (defaultBit) metaBits.push(defaultBit);
    meta.append(...metaBits);
    field.node = el("div", { class: "field field-check", dataset: { field: key } },
      control, el("div", { class: "field-body" }, el("label", { for: id }, label), appliesNode, help, meta, errorNode));
  } else if (prop.type === "boolean" || (prop.enum && prop.enum.length && prop.type !== "array")) {
    // An enum (or a nullable boolean: yes / no / none) is a select; options carry JSON.
    const values = prop.type === "boolean" ? [true, false] : prop.enum;
    control = el("select", { id, name: key, "aria-describedby": describedBy, "aria-required": required ? "true" : null });
    if (prop.nullable) control.append(el("option", { value: "" }, dflt === null || !hasDefault ? "default" : "none"));
    else if (!hasDefault) control.append(el("option", { value: "" }, required ? "Choose…" : "default"));
    for (const v of values) control.append(el("option", { value: JSON.stringify(v) }, choiceText(prop, v)));
    field.set = (v) => {
      const wanted = v === null || v === undefined ? "" : JSON.stringify(v);
      control.value = [...control.options].some((o) => o.value === wanted) ? wanted : control.options[0].value;
    };
    field.read = () => (control.value === "" ? emptyRead() : { value: JSON.parse(control.value) });
    if (defaultBit) metaBits.push(defaultBit);
  } else if (prop.type === "integer" || prop.type === "number") {
    const integer = prop.type === "integer";
    const loEx = prop.minimum === undefined && prop.exclusiveMinimum !== undefined;
    const hiEx = prop.maximum === undefined && prop.exclusiveMaximum !== undefined;
    const lo = prop.minimum ?? prop.exclusiveMinimum;
    const hi = prop.maximum ?? prop.exclusiveMaximum;
    control = el("input", {
      type: "number", id, name: key, inputmode: integer ? "numeric" : "decimal",
      step: prop.multipleOf ? String(prop.multipleOf) : integer ? "1" : "any",
      min: lo ?? null, max: hi ?? null,
      "data-integer": integer, "data-exclusive-min": loEx, "data-exclusive-max": hiEx,
      "data-multiple-of": prop.multipleOf ?? null,
      placeholder: isSeed && prop.nullable ? "random" : prop.nullable ? (dflt === null || !hasDefault ? "default" : "none") : null,
      "aria-describedby": describedBy, "aria-required": required ? "true" : null,
    });
    field.set = (v) => { control.value = v === null || v === undefined ? "" : String(v); };
    field.read = () => {
      if (control.validity && control.validity.badInput) return { error: "must be a number" };
      const raw = control.value.trim();
      if (raw === "") return emptyRead();
      const n = Number(raw);
      if (!Number.isFinite(n)) return { error: "must be a number" };
      const problem = numberProblem(n, control);
      return problem ? { error: problem } : { value: n };
    };
    const range = boundsText(lo, loEx, hi, hiEx);
    if (range) metaBits.push(el("span", { class: "bounds" }, `${integer ? "Whole number" : "Number"} ${range}`));
    else if (integer) metaBits.push(el("span", { class: "bounds" }, "Whole number"));
    if (defaultBit) metaBits.push(defaultBit);
  } else if (prop.type === "array" && prop.items && prop.items.enum && prop.items.enum.length) {
    // A group of checkboxes (the fieldset carries the id and the item counts); each box's
    // value is its enum value as JSON, its id `${id}-${value}`.
    const boxes = prop.items.enum.map((v) => el("input", {
      type: "checkbox", id: `${id}-${String(v).replace(/[^\w-]/g, "_")}`, name: key, value: JSON.stringify(v),
    }));
    control = el("fieldset", {
      id, class: "choice-group", "data-min-items": prop.minItems ?? null, "data-max-items": prop.maxItems ?? null,
      "data-unique": prop.uniqueItems === true, "aria-describedby": describedBy,
    },
    el("legend", {}, label, required ? el("span", { class: "required", "aria-hidden": "true" }, " *") : null),
    el("div", { class: "chips" }, ...boxes.map((box, i) => el("label", { class: "chip", for: box.id }, box, choiceText(prop, prop.items.enum[i])))));
    field.focusTarget = boxes[0];
    field.set = (v) => {
      const chosen = new Set((Array.isArray(v) ? v : []).map((x) => JSON.stringify(x)));
      for (const box of boxes) box.checked = chosen.has(box.value);
    };
    field.read = () => {
      const chosen = boxes.filter((box) => box.checked).map((box) => JSON.parse(box.value));
      // Nothing chosen: none (nullable) or the default (optional); required ones check counts.
      if (!chosen.length && (prop.nullable || !required)) return emptyRead();
      const problem = countProblem(chosen, control);
      return problem ? { error: problem } : { value: chosen };
    };
    const count = itemCountText(prop.minItems, prop.maxItems);
    metaBits.push(el("span", { class: "bounds" }, `Tick one or more${count ? `; ${count}` : ""}`));
    if (defaultBit) metaBits.push(defaultBit);
    if (emptyMeaning) metaBits.push(el("span", { class: "empty-meaning" }, emptyMeaning.replace("Leave empty", "Tick none")));
    meta.append(...metaBits);
    field.node = el("div", { class: "field field-choices", dataset: { field: key } }, control, appliesNode, help, meta, errorNode);
  } else if (prop.type === "array" && (!prop.items || ["number", "integer", "string"].includes(prop.items.type))) {
    const items = prop.items || { type: "string" };
    const numeric = items.type === "number" || items.type === "integer";
    const loEx = items.minimum === undefined && items.exclusiveMinimum !== undefined;
    const hiEx = items.maximum === undefined && items.exclusiveMaximum !== undefined;
    const lo = items.minimum ?? items.exclusiveMinimum;
    const hi = items.maximum ?? items.exclusiveMaximum;
    control = el("input", {
      type: "text", id, name: key, autocomplete: "off", spellcheck: "false",
      inputmode: numeric ? "decimal" : null,
      placeholder: numeric ? "e.g. 1, 2.5, 10" : "comma-separated",
      "data-item-min": numeric ? lo ?? null : null, "data-item-max": numeric ? hi ?? null : null,
      "data-item-integer": items.type === "integer", "data-item-exclusive-min": numeric && loEx,
      "data-item-exclusive-max": numeric && hiEx, "data-item-multiple-of": items.multipleOf ?? null,
      "data-min-items": prop.minItems ?? null, "data-max-items": prop.maxItems ?? null,
      "data-unique": prop.uniqueItems === true, "aria-describedby": describedBy,
      "aria-required": required ? "true" : null,
    });
    field.set = (v) => { control.value = Array.isArray(v) ? v.map((x) => String(x)).join(", ") : ""; };
    field.read = () => {
      const raw = control.value.trim();
      if (raw === "") return emptyRead();
      const parts = raw.split(numeric ? /[\s,;]+/ : /\s*,\s*/).map((p) => p.trim()).filter(Boolean);
      let values = parts;
      if (numeric) {
        values = [];
        for (const part of parts) {
          const n = Number(part);
          if (!Number.isFinite(n)) return { error: `has “${part}”, which is not a number` };
          const problem = numberProblem(n, control, { item: true });
          if (problem) return { error: `has ${part}, which ${problem.replace(/^must/, "should")}` };
          values.push(n);
        }
      } else {
        for (const part of parts) {
          const problem = stringProblem(part, items);
          if (problem) return { error: `has “${part}”, which ${problem}` };
        }
      }
      const problem = countProblem(values, control);
      return problem ? { error: problem } : { value: values };
    };
    const kind = items.type === "integer" ? "whole numbers" : numeric ? "numbers" : "values";
    const range = numeric ? boundsText(lo, loEx, hi, hiEx) : "";
    const count = itemCountText(prop.minItems, prop.maxItems);
    metaBits.push(el("span", { class: "bounds" }, `Comma-separated ${kind}${range ? `, each ${range}` : ""}${count ? `; ${count}` : ""}`));
    if (defaultBit) metaBits.push(defaultBit);
  } else if (prop.type === "string") {
    control = el("input", {
      type: "text", id, name: key, autocomplete: "off", spellcheck: "false",
      maxlength: prop.maxLength ?? null, placeholder: prop.nullable ? (dflt === null || !hasDefault ? "default" : "none") : null,
      "aria-describedby": describedBy, "aria-required": required ? "true" : null,
    });
    field.set = (v) => { control.value = v === null || v === undefined ? "" : String(v); };
    field.read = () => {
      const raw = control.value.trim();
      if (raw === "") return emptyRead();
      const problem = stringProblem(raw, prop);
      return problem ? { error: problem } : { value: raw };
    };
    if (defaultBit) metaBits.push(defaultBit);
  } else {
    // Nested models, arrays of arrays, free-form objects: edit them as JSON.
    control = el("textarea", {
      id, name: key, rows: "3", spellcheck: "false", class: "json-input",
      "aria-describedby": describedBy, "aria-required": required ? "true" : null,
    });
    field.set = (v) => { control.value = v === null || v === undefined ? "" : JSON.stringify(v); };
    field.read = () => {
      const raw = control.value.trim();
      if (raw === "") return emptyRead();
      try {
        return { value: JSON.parse(raw) };
      } catch {
        return { error: "is not valid JSON" };
      }
    };
    metaBits.push(el("span", { class: "bounds" }, "JSON"));
  }

  if (!field.node) {
    // A select says what its empty option means itself.
    if (emptyMeaning && control.tagName !== "SELECT") metaBits.push(el("span", { class: "empty-meaning" }, emptyMeaning));
    meta.append(...metaBits);
    const wide = control.tagName === "TEXTAREA" || (prop.type === "array" && control.tagName === "INPUT") ||
      (prop.description || "").length > 160;
    field.node = el("div", { class: `field${wide ? " field-wide" : ""}`, dataset: { field: key } },
      el("label", { for: id }, label, required ? el("span", { class: "required", "aria-hidden": "true" }, " *") : null),
      control, appliesNode, help, meta, errorNode);
  }
  field.control = control;
  field.focus = () => (field.focusTarget || control).focus();
  field.dflt = dflt;
  field.applies = true;
  // A field that does not apply is disabled (a fieldset disables its boxes) and says why.
  field.setApplies = (applies, note) => {
    field.applies = applies;
    control.disabled = !applies;
    field.node.classList.toggle("is-inapplicable", !applies);
    appliesNode.textContent = applies ? "" : note;
    appliesNode.hidden = applies;
    if (!applies) field.clearError();
  };
  field.reset = () => field.set(hasDefault ? dflt : undefined);
  field.showError = (message) => {
    errorNode.textContent = message;
    errorNode.hidden = false;
    control.setAttribute("aria-invalid", "true");
    field.node.classList.add("has-error");
  };
  field.clearError = () => {
    errorNode.textContent = "";
    errorNode.hidden = true;
    control.removeAttribute("aria-invalid");
    field.node.classList.remove("has-error");
  };
  control.addEventListener("input", () => field.clearError());
  control.addEventListener("change", () => field.clearError());
  field.reset();
  return field;
}

// ------------------------------------------------------------------ the form

/**
 * Render a form for `schema` into `container`.
 * Options: `exclude` (keys to leave out), `idPrefix` (ids are `${idPrefix}-${key}`).
 * Returns a controller:
 *   fields            [{key, label, node, control, focus(), applies, …}] in schema order
 *   field(key)        one of them, or undefined
 *   collect()         {spec, errors: [{key, label, message}]}; marks invalid fields; fields
 *                     that do not apply are left out
 *   preview()         the spec as collect() would send it, or null while a field is
 *                     invalid; marks nothing (for live estimates while typing)
 *   reset()           every field back to the schema's default
 *   setValues(spec)   fill in the values of a spec (e.g. from an earlier run)
 *   clearErrors()
 */
export function buildForm(container, schema, { exclude = [], idPrefix = "f" } = {}) {
  const root = schema || {};
  const props = root.properties || {};
  const required = new Set(root.required || []);
  const fields = [];
  for (const key of Object.keys(props)) {
    if (exclude.includes(key) || props[key].readOnly) continue;
    fields.push(buildField(key, normalise(props[key], root), { idPrefix, required: required.has(key) }));
  }
  container.replaceChildren(...fields.map((f) => f.node));

  const byKey = new Map(fields.map((f) => [f.key, f]));
  const clearErrors = () => fields.forEach((f) => f.clearError());

  // The value the server would use for `key`: what the form sends, else the default;
  // undefined while the field is invalid.
  const valueOf = (key) => {
    const f = byKey.get(key);
    if (!f) return props[key] ? normalise(props[key], root).default : undefined;
    if (!f.applies) return f.dflt;
    const out = f.read();
    if (out.error) return undefined;
    return out.value === OMIT ? f.dflt : out.value;
  };
  const conditional = fields.filter((f) => f.when);
  const updateApplies = () => {
    for (const f of conditional) f.setApplies(conditionHolds(f.when, valueOf), conditionText(f.when, (k) => byKey.get(k)));
  };
  container.addEventListener("input", updateApplies);
  container.addEventListener("change", updateApplies);
  updateApplies();

  return {
    fields,
    field: (key) => byKey.get(key),
    clearErrors,
    reset() {
      clearErrors();
      fields.forEach((f) => f.reset());
      updateApplies();
    },
    setValues(spec) {
      for (const f of fields) if (spec && Object.hasOwn(spec, f.key)) f.set(spec[f.key]);
      updateApplies();
    },
    preview() {
      const spec = {};
      for (const f of fields.filter((field) => field.applies)) {
        const out = f.read();
        if (out.error) return null;
        if (out.value !== OMIT) spec[f.key] = out.value;
      }
      return spec;
    },
    collect() {
      clearErrors();
      const spec = {};
      const errors = [];
      for (const f of fields.filter((field) => field.applies)) {
        const out = f.read();
        if (out.error) {
          const message = `${f.label} ${out.error}.`;
          f.showError(message);
          errors.push({ key: f.key, label: f.label, message });
        } else if (out.value !== OMIT) {
          spec[f.key] = out.value;
        }
      }
      return { spec, errors };
    },
  };
}

/**
 * The spec fields a server message names ("spec.seeds: Input should be …; spec.x: …"),
 * each with its part of the message: [{key, message}].
 */
export function fieldsNamedIn(text) {
  const found = [];
  for (const part of String(text || "").split(/;\s*/)) {
    const m = /spec\.([A-Za-z_][\w]*)(?:\.[\w.]+)?\s*:\s*(.*)$/.exec(part);
    if (m && !found.some((f) => f.key === m[1])) found.push({ key: m[1], message: m[2].trim() });
  }
  return found;
}
