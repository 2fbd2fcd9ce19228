// A media input of the drawer: upload by click, drag-and-drop or paste, or pick a previous
// output from the session. Its value is an artifact id.

import type { App } from "./app";
import type { Artifact, InputSpec } from "./api";
import { ApiError } from "./api";
import { fill, h, modal } from "./dom";
import type { Field } from "./form";
import { MEDIA_ACCEPT, accepts, renderArtifact } from "./media";

export interface MediaField extends Field {
  kind: string;
  empty(): boolean;
  accepts(kind: string): boolean;
  setArtifact(art: Artifact): void;
  upload(file: File): Promise<void>;
}

export function mediaField(app: App, name: string, spec: InputSpec): MediaField {
  const key = `inputs.${name}`;
  let current: Artifact | null = null;
  let ticket = 0;  // a newer choice wins over a slower, older one
  const errorEl = h("div", { class: "field-error", role: "alert" });
  const picker = h("input", { type: "file", accept: MEDIA_ACCEPT[spec.kind] ?? "", hidden: true,
                              "aria-label": `Upload ${name}` });
  const zone = h("div", { class: "dropzone", tabIndex: 0, role: "button",
                          "aria-label": `${name}: drop, paste or click to upload` });
  const clear = h("button", { class: "icon", type: "button", title: "Remove",
                              "aria-label": `Remove ${name}`, onclick: () => show(null) }, "✕");
  const el = h("div", { class: "field field-media", "data-field": key },
    h("div", { class: "field-head" },
      h("label", null, name, spec.required ? h("b", null, " *") : null),
      h("span", { class: "field-meta" }, spec.kind, spec.required ? "" : " · optional"),
      h("button", { class: "link", type: "button", onclick: () => pickFromSession() },
        "from gallery…"),
      clear),
    zone, picker,
    spec.description ? h("div", { class: "hint" }, spec.description) : null,
    errorEl);

  const field: MediaField = {
    key, el, kind: spec.kind,
    value: () => current?.id,
    empty: () => current === null,
    accepts: (kind) => accepts(spec.kind, kind),
    setArtifact: (art) => show(art),
    set: (v) => {
      if (typeof v !== "string") return show(null);
      const mine = ++ticket;
      app.api.artifact(v).then((art) => mine === ticket && show(art),
                               () => mine === ticket && show(null));
    },
    error(message) {
      el.classList.toggle("invalid", !!message);
      errorEl.textContent = message ?? "";
      if (message) el.scrollIntoView({ block: "nearest" });
    },
    async upload(file) {
      ++ticket;
      field.error(null);
      fill(zone, h("div", { class: "placeholder" }, `uploading ${file.name}…`));
      try {
        const art = await app.api.upload(file, file.name || "pasted");
        if (!accepts(spec.kind, art.kind)) {
          show(null);
          field.error(`${name} needs ${article(spec.kind)} ${spec.kind}; `
                      + `${file.name || "that file"} is ${art.kind}`);
          return;
        }
        show(art);
      } catch (e) {
        show(null);
        field.error(e instanceof ApiError ? e.message : `upload failed: ${e}`);
      }
    },
  };

  function show(art: Artifact | null): void {
    ++ticket;
    current = art;
    clear.hidden = art === null;
    el.dispatchEvent(new Event("change", { bubbles: true }));  // the drawer keeps a draft
    el.classList.toggle("filled", art !== null);
    if (art) {
      field.error(null);
      fill(zone, renderArtifact(app.api, art), h("div", { class: "caption" }, art.name));
    } else {
      fill(zone, h("div", { class: "placeholder" },
        h("strong", null, "Drop, paste or click"), ` to add ${article(spec.kind)} `,
        spec.kind));
    }
  }

  async function pickFromSession(): Promise<void> {
    const session = app.session;
    const arts = session ? (await app.api.session(session)).artifacts : [];
    const fitting = arts.filter((a) => accepts(spec.kind, a.kind));
    const dialog = modal(`Pick ${spec.kind} for “${name}”`,
      fitting.length ? h("div", { class: "pick-grid" }, fitting.map((a) =>
        h("button", { class: "pick", type: "button", title: a.name,
                      onclick: () => { show(a); dialog.close(); } },
          renderArtifact(app.api, a, true))))
        : h("p", { class: "muted" }, `No ${spec.kind} in this session yet.`));
  }

  zone.addEventListener("click", (e) => {
    if ((e.target as HTMLElement).closest("audio, video")) return;
    picker.click();
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); picker.click(); }
  });
  picker.addEventListener("change", () => {
    const file = picker.files?.[0];
    if (file) void field.upload(file);
    picker.value = "";
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const artifactId = e.dataTransfer?.getData("application/x-stablecore-artifact");
    const file = e.dataTransfer?.files[0];
    if (artifactId) field.set(artifactId);
    else if (file) void field.upload(file);
  });
  show(null);
  return field;
}

function article(word: string): string {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}
