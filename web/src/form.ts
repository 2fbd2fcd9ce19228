// One form field per JSON Schema property: text, prompt, number + slider, choice, switch,
// seed with a dice button, or raw JSON for anything else. No job-specific code.

import type { Schema } from "./api";
import { h } from "./dom";
import type { Child } from "./dom";

/** A field of the job drawer; `key` is how the server names it in errors ("params.steps"). */
export interface Field {
  key: string;
  el: HTMLElement;
  /** The value to send; undefined leaves it out (the server applies the default). */
  value(): unknown;
  set(value: unknown): void;
  error(message: string | null): void;
}

export class FieldError extends Error {
  constructor(readonly key: string, message: string) {
    super(message);
  }
}

const MULTILINE = /prompt|text|caption|description|negative/i;
const SEED = /(^|_)seed$/i;

/** The schema with $ref/allOf/anyOf-null unwrapped; `nullable` when None is allowed. */
export function resolve(schema: Schema, defs: Record<string, Schema> = {}):
    { schema: Schema; nullable: boolean } {
  let s: Schema = { ...schema };
  if (s.$ref) {
    const { $ref, ...rest } = s;
    s = { ...defs[$ref.split("/").pop()!], ...rest };
  }
  if (s.allOf?.length === 1) {
    const { allOf, ...rest } = s;
    s = { ...resolve(allOf[0], defs).schema, ...rest };
  }
  let nullable = false;
  if (s.anyOf) {
    const options = s.anyOf.filter((o) => o.type !== "null");
    nullable = options.length < s.anyOf.length;
    if (options.length === 1) {
      const { anyOf: _drop, ...rest } = s;
      s = { ...resolve(options[0], defs).schema, ...rest };
    }
  }
  if (!s.enum && s.anyOf?.every((o) => "const" in o)) s.enum = s.anyOf.map((o) => o.const);
  if (!s.enum && "const" in s) s.enum = [s.const];
  return { schema: s, nullable };
}

export function paramField(name: string, raw: Schema, required: boolean,
                           defs: Record<string, Schema>): Field {
  const { schema, nullable } = resolve(raw, defs);
  const key = `params.${name}`;
  const errorEl = h("div", { class: "field-error", role: "alert" });
  const editor = editorFor(name, schema, nullable);
  const reset = schema.default !== undefined || nullable
    ? h("button", { class: "icon reset", type: "button", title: "Reset to the default",
                    "aria-label": `Reset ${name}`,
                    onclick: () => editor.set(schema.default ?? null) }, "↺")
    : null;
  const el = h("div", { class: `field field-${editor.kind}`, "data-field": key },
    h("div", { class: "field-head" },
      h("label", { for: `f-${name}` }, schema.title ?? name, required ? h("b", null, " *") : null),
      h("span", { class: "field-meta" }, meta(schema, nullable)), reset),
    editor.el,
    schema.description ? h("div", { class: "hint" }, schema.description) : null,
    errorEl);
  if (schema.default !== undefined) editor.set(schema.default);
  return {
    key, el, value: editor.value, set: editor.set,
    error(message) {
      el.classList.toggle("invalid", !!message);
      errorEl.textContent = message ?? "";
      if (message) el.scrollIntoView({ block: "nearest" });
    },
  };
}

function meta(schema: Schema, nullable: boolean): string {
  const parts: string[] = [];
  const lo = schema.minimum ?? schema.exclusiveMinimum;
  const hi = schema.maximum ?? schema.exclusiveMaximum;
  if (lo !== undefined || hi !== undefined) parts.push(`${lo ?? "…"} – ${hi ?? "…"}`);
  if (nullable) parts.push("optional");
  return parts.join(" · ");
}

interface Editor {
  kind: string;
  el: Child & HTMLElement;
  value(): unknown;
  set(value: unknown): void;
}

function editorFor(name: string, schema: Schema, nullable: boolean): Editor {
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  if (schema.enum) return choice(name, schema.enum, nullable);
  if (type === "boolean") return toggle(name);
  if (type === "integer" || type === "number") return numeric(name, schema, type, nullable);
  if (type === "string") return text(name, schema, nullable);
  const items = schema.items && resolve(schema.items).schema;
  if (type === "array" && items?.enum) return choices(name, items.enum);
  return json(name, nullable);
}

function choice(name: string, options: unknown[], nullable: boolean): Editor {
  const all = nullable ? [null, ...options] : options;
  const select = h("select", { id: `f-${name}`, name },
    all.map((o, i) => h("option", { value: String(i) }, o === null ? "—" : String(o))));
  return {
    kind: "choice", el: select,
    value: () => all[Number(select.value)],
    set: (v) => {
      const i = all.findIndex((o) => o === v);
      if (i >= 0) select.value = String(i);
    },
  };
}

/** Several of a fixed set (an array of enum items): one checkbox each. */
function choices(name: string, options: unknown[]): Editor {
  const boxes = options.map((o) => h("input", { type: "checkbox", value: String(o) }));
  return {
    kind: "choices",
    el: h("div", { class: "choices", id: `f-${name}`, role: "group" },
      boxes.map((box, i) => h("label", { class: "chip" }, box, String(options[i])))),
    value: () => options.filter((_, i) => boxes[i].checked),
    set: (v) => boxes.forEach((box, i) => {
      box.checked = Array.isArray(v) && v.includes(options[i]);
    }),
  };
}

function toggle(name: string): Editor {
  const box = h("input", { id: `f-${name}`, name, type: "checkbox" });
  return {
    kind: "bool", el: h("label", { class: "switch" }, box, h("span", { class: "slider" })),
    value: () => box.checked,
    set: (v) => { box.checked = !!v; },
  };
}

function numeric(name: string, schema: Schema, type: string, nullable: boolean): Editor {
  const integer = type === "integer";
  const min = schema.minimum ?? schema.exclusiveMinimum;
  const max = schema.maximum ?? schema.exclusiveMaximum;
  const step = schema.multipleOf ?? (integer ? 1 : "any");
  const input = h("input", { id: `f-${name}`, name, type: "number", step, min, max,
                             placeholder: nullable ? "none" : "" });
  const parts: HTMLElement[] = [];
  if (min !== undefined && max !== undefined && max > min && max - min <= 10_000) {
    const slider = h("input", {
      type: "range", min, max, tabIndex: -1, "aria-label": `${name} slider`,
      step: schema.multipleOf
        ?? (integer ? Math.max(1, Math.round((max - min) / 1000)) : (max - min) / 200),
    });
    slider.addEventListener("input", () => { input.value = slider.value; });
    input.addEventListener("input", () => { slider.value = input.value; });
    parts.push(slider);
    input.addEventListener("change", () => { slider.value = input.value; });
  }
  parts.push(input);
  if (integer && SEED.test(name)) {
    parts.push(h("button", {
      class: "icon dice", type: "button", title: "New random seed (-1: random on each run)",
      "aria-label": `Randomise ${name}`,
      onclick: () => {
        const lo = Math.max(0, min ?? 0);
        const hi = Math.min(max ?? 2 ** 32 - 1, 2 ** 32 - 1);
        input.value = String(lo + Math.floor(Math.random() * (hi - lo + 1)));
        input.dispatchEvent(new Event("input"));
      },
    }, "⚄"));
  }
  return {
    kind: "number", el: h("div", { class: "number-row" }, parts),
    value: () => input.value === "" ? (nullable ? null : undefined) : Number(input.value),
    set: (v) => {
      input.value = v === null || v === undefined ? "" : String(v);
      input.dispatchEvent(new Event("input"));
    },
  };
}

function text(name: string, schema: Schema, nullable: boolean): Editor {
  const long = MULTILINE.test(name) || (schema.maxLength ?? 0) > 200
    || schema.format === "multiline" || schema["x-multiline"] === true;
  const input = long
    ? h("textarea", { id: `f-${name}`, name, rows: /prompt/i.test(name) ? 4 : 2,
                      maxLength: schema.maxLength })
    : h("input", { id: `f-${name}`, name, type: "text", maxLength: schema.maxLength });
  return {
    kind: long ? "prompt" : "text", el: input,
    value: () => input.value === "" && nullable ? null : input.value,
    set: (v) => { input.value = v === null || v === undefined ? "" : String(v); },
  };
}

function json(name: string, nullable: boolean): Editor {
  const input = h("textarea", { id: `f-${name}`, name, rows: 2, class: "mono",
                                placeholder: "JSON" });
  return {
    kind: "json", el: input,
    value: () => {
      if (input.value.trim() === "") return nullable ? null : undefined;
      try {
        return JSON.parse(input.value);
      } catch {
        throw new FieldError(`params.${name}`, "not valid JSON");
      }
    },
    set: (v) => { input.value = v === null || v === undefined ? "" : JSON.stringify(v); },
  };
}
