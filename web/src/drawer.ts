// The job drawer: pick any job of the catalog (grouped by plugin, searchable) and fill a form
// generated from its schema. Works for every job, with no job-specific code.

import type { App } from "./app";
import type { Artifact, Job, Spec } from "./api";
import { ApiError } from "./api";
import { fill, h } from "./dom";
import { FieldError, paramField } from "./form";
import type { Field } from "./form";
import { mediaField } from "./inputs";
import type { MediaField } from "./inputs";

const LAST_RUN_KEY = "stablecore.lastRun";  // the job the user queued last
const FIRST_JOB = "sd.txt2img";  // what a first visit opens on, when installed
const DRAFTS_KEY = "stablecore.drafts";

type Values = { params: Record<string, unknown>; inputs: Record<string, string | string[]> };

export class Drawer {
  readonly el: HTMLElement;
  private spec: Spec | null = null;
  private fields = new Map<string, Field>();
  private media: MediaField[] = [];
  private title = h("button", { class: "job-button", "aria-haspopup": "listbox",
                                onclick: () => this.togglePicker() });
  private picker = h("div", { class: "picker", hidden: true });
  private search = h("input", { type: "search", placeholder: "Search jobs…",
                                "aria-label": "Search jobs" });
  private list = h("div", { class: "picker-list", role: "listbox" });
  private description = h("p", { class: "description" });
  private form = h("form", { class: "job-form", novalidate: true });
  private fieldsBox = h("div", { class: "fields" });
  private priority = h("input", { type: "number", value: "0", min: -1000, max: 1000, step: 1,
                                  "aria-label": "Priority", title: "Priority: higher runs first" });
  private submitButton = h("button", { class: "primary", type: "submit" }, "Queue");
  private message = h("div", { class: "form-message", role: "status" });
  /** What was last in the form of each job, so switching jobs or reloading loses nothing. */
  private drafts: Record<string, Values> = readDrafts();
  private started = false;  // the catalog was there once: later loads refresh

  constructor(private app: App) {
    this.picker.append(this.search, this.list);
    this.form.append(this.fieldsBox,
      h("div", { class: "submit-row" },
        h("label", { class: "priority" }, "priority", this.priority), this.submitButton),
      this.message);
    this.el = h("section", { class: "drawer panel", "aria-label": "Job drawer" },
      h("div", { class: "panel-title" }, "Job",
        h("button", { class: "link reset-all", type: "button", title: "Every field to its default",
                      onclick: () => this.reset() }, "reset")),
      this.title, this.picker, this.description, this.form);
    this.form.addEventListener("input", () => this.saveDraft());
    this.form.addEventListener("change", () => this.saveDraft());
    this.search.addEventListener("input", () => this.renderList());
    this.search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        const first = this.list.querySelector<HTMLElement>("[data-job]");
        if (first) this.select(first.dataset.job!);
      } else if (e.key === "Escape") this.togglePicker(false);
    });
    this.form.addEventListener("submit", (e) => { e.preventDefault(); void this.submit(); });
    this.form.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); void this.submit(); }
    });
    document.addEventListener("paste", (e) => this.onPaste(e));
    app.on("catalog", () => { if (this.started) this.refresh(); });
  }

  /** Open the job the user ran last; on a first visit `sd.txt2img`, else the first job. */
  start(): void {
    this.started = true;
    this.renderList();
    const last = localStorage.getItem(LAST_RUN_KEY);
    const name = [last, FIRST_JOB].find((n) => n && this.app.specs.has(n))
      ?? this.app.specs.keys().next().value;
    if (name) this.select(name);
    else fill(this.title, "No jobs: install a plugin");
  }

  /** The catalog was reloaded (a rescan): rebuild the list and the open form, keeping its
   * values, so new choices (model files) appear. */
  private refresh(): void {
    const current = this.spec?.name;
    if (current && this.app.specs.has(current)) {
      const open = !this.picker.hidden;
      this.select(current);
      if (open) this.togglePicker(true);
    } else {
      this.spec = null;
      this.start();
    }
  }

  /** Show a job's form, with its draft unless `restore` is false. */
  select(name: string, restore = true): void {
    const spec = this.app.specs.get(name);
    if (!spec) return;
    this.saveDraft();
    this.spec = null;  // no drafts saved while the form is rebuilt
    this.togglePicker(false);
    fill(this.title, h("span", { class: "plugin" }, `${spec.plugin}.`),
      h("span", { class: "job-name" }, name.slice(spec.plugin.length + 1)), h("span", null, "▾"));
    this.title.dataset.current = name;
    this.description.textContent = spec.description;
    this.fields.clear();
    this.media = [];
    this.message.textContent = "";
    const defs = (spec.params.$defs ?? {}) as Record<string, never>;
    const required = new Set(spec.params.required ?? []);
    const boxes: HTMLElement[] = [];
    for (const [input, info] of Object.entries(spec.inputs)) {
      const field = mediaField(this.app, input, info);
      this.media.push(field);
      this.fields.set(field.key, field);
      boxes.push(field.el);
    }
    for (const [param, schema] of Object.entries(spec.params.properties ?? {})) {
      const field = paramField(param, schema, required.has(param), defs);
      this.fields.set(field.key, field);
      boxes.push(field.el);
    }
    if (!boxes.length) boxes.push(h("p", { class: "muted" }, "This job takes no parameters."));
    fill(this.fieldsBox, boxes);
    const draft = this.drafts[name];
    if (restore && draft) this.fillForm(draft);
    this.spec = spec;
  }

  private fillForm({ params, inputs }: Values): void {
    for (const [name, value] of Object.entries(params)) {
      this.fields.get(`params.${name}`)?.set(value);
    }
    for (const [name, ref] of Object.entries(inputs)) {
      this.fields.get(`inputs.${name}`)?.set(ref);
    }
  }

  private saveDraft(): void {
    if (!this.spec) return;
    try {
      this.drafts[this.spec.name] = this.values();
      localStorage.setItem(DRAFTS_KEY, JSON.stringify(this.drafts));
    } catch {
      // a field that does not parse yet (half-typed JSON) is saved on the next change
    }
  }

  private reset(): void {
    if (!this.spec) return;
    delete this.drafts[this.spec.name];
    localStorage.setItem(DRAFTS_KEY, JSON.stringify(this.drafts));
    this.select(this.spec.name, false);
  }

  /** "Use these again": the job's spec, params and inputs back in the form. */
  load(job: Job): void {
    this.select(job.spec, false);
    this.fillForm(job);
    this.priority.value = String(job.priority);
    this.saveDraft();
  }

  /** "Send to": open a job with this artifact in its first input that takes it. */
  sendTo(name: string, art: Artifact): void {
    this.select(name);
    this.media.find((f) => f.accepts(art.kind))?.setArtifact(art);
    this.saveDraft();
  }

  private togglePicker(open = this.picker.hidden): void {
    this.picker.hidden = !open;
    this.title.setAttribute("aria-expanded", String(open));
    if (open) {
      this.search.value = "";
      this.renderList();
      this.search.focus();
    }
  }

  private renderList(): void {
    const words = this.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const groups = new Map<string, Spec[]>();
    for (const spec of this.app.specs.values()) {
      const hay = `${spec.name} ${spec.description}`.toLowerCase();
      if (!words.every((w) => hay.includes(w))) continue;
      groups.set(spec.plugin, [...(groups.get(spec.plugin) ?? []), spec]);
    }
    const broken = this.app.plugins.filter((p) => p.error);
    fill(this.list, groups.size === 0 ? h("div", { class: "muted" }, "No job matches.") : null,
      [...groups].map(([plugin, specs]) => h("div", { class: "group" },
        h("div", { class: "group-title" }, plugin),
        specs.map((spec) => h("button", {
          class: `pick-job${spec.name === this.spec?.name ? " current" : ""}`, type: "button",
          role: "option", "data-job": spec.name, onclick: () => this.select(spec.name),
        }, h("span", { class: "job-name" }, spec.name.slice(plugin.length + 1)),
          h("span", { class: "muted" }, spec.description))))),
      broken.length ? h("div", { class: "group broken" },
        h("div", { class: "group-title" }, "plugins that did not load"),
        broken.map((p) => h("div", { class: "plugin-error" }, h("strong", null, p.name), " ",
          h("span", null, p.error)))) : null);
  }

  private values(): Values {
    const params: Record<string, unknown> = {};
    const inputs: Record<string, string | string[]> = {};
    for (const [key, field] of this.fields) {
      const value = field.value();
      if (value === undefined) continue;
      const [where, name] = [key.slice(0, key.indexOf(".")), key.slice(key.indexOf(".") + 1)];
      if (where === "inputs") inputs[name] = value as string | string[];
      else params[name] = value;
    }
    return { params, inputs };
  }

  private async submit(): Promise<void> {
    if (!this.spec) return;
    for (const field of this.fields.values()) field.error(null);
    this.message.textContent = "";
    this.message.className = "form-message";
    let body;
    try {
      body = this.values();
      this.saveDraft();
    } catch (e) {
      if (e instanceof FieldError) this.fields.get(e.key)?.error(e.message);
      return;
    }
    this.submitButton.disabled = true;
    try {
      const job = await this.app.api.submit({
        spec: this.spec.name, ...body, session: this.app.session,
        priority: Number(this.priority.value) || 0,
      });
      this.app.putJob(job);
      localStorage.setItem(LAST_RUN_KEY, job.spec);
      if (!this.app.session) this.app.session = job.session_id;
      this.say(`Queued ${job.spec}`, "ok");
    } catch (e) {
      const field = e instanceof ApiError && e.field ? this.fields.get(e.field) : undefined;
      const text = e instanceof Error ? e.message : String(e);
      if (field) field.error(text.replace(/^[\w.]+: /, ""));  // the field already says where
      else this.say(e instanceof Error ? e.message : String(e), "error");
    } finally {
      this.submitButton.disabled = false;
    }
  }

  private say(text: string, kind: "ok" | "error"): void {
    this.message.textContent = text;
    this.message.className = `form-message ${kind}`;
  }

  /** A pasted file goes to the focused media input, else the first empty one that takes it. */
  private onPaste(e: ClipboardEvent): void {
    const file = e.clipboardData?.files[0];
    if (!file || !this.media.length) return;
    const kind = file.type.split("/")[0];
    const focused = this.media.find((f) => f.el.contains(document.activeElement));
    const target = focused ?? this.media.find((f) => f.empty() && f.accepts(kind))
      ?? this.media.find((f) => f.accepts(kind));
    if (!target) return;
    e.preventDefault();
    void target.upload(file);
  }
}

function readDrafts(): Record<string, Values> {
  try {
    return JSON.parse(localStorage.getItem(DRAFTS_KEY) ?? "{}") as Record<string, Values>;
  } catch {
    return {};
  }
}
