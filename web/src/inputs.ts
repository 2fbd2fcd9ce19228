// A media input of the drawer: upload by click, drag-and-drop or paste, or pick a previous
// output from the session. Its value is an artifact id, or for a list input (`many`) the ids
// of the artifacts added so far, in order.

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
  const many = spec.many === true;
  let current: Artifact[] = [];
  let ticket = 0;  // a newer choice wins over a slower, older one
  const errorEl = h("div", { class: "field-error", role: "alert" });
  const picker = h("input", { type: "file", accept: MEDIA_ACCEPT[spec.kind] ?? "", hidden: true,
                              multiple: many, "aria-label": `Upload ${name}` });
  const zone = h("div", { class: "dropzone", tabIndex: 0, role: "button",
                          "aria-label": `${name}: drop, paste or click to upload` });
  const clear = h("button", { class: "icon", type: "button", title: "Remove",
                              "aria-label": `Remove ${name}`, onclick: () => show(null) }, "✕");
  const el = h("div", { class: "field field-media", "data-field": key },
    h("div", { class: "field-head" },
      h("label", null, name, spec.required ? h("b", null, " *") : null),
      h("span", { class: "field-meta" }, spec.kind, many ? " list" : "",
        spec.required ? "" : " · optional"),
      h("button", { class: "link", type: "button", onclick: () => pickFromSession() },
        "from gallery…"),
      clear),
    zone, picker,
    spec.description ? h("div", { class: "hint" }, spec.description) : null,
    errorEl);

  const field: MediaField = {
    key, el, kind: spec.kind,
    value: () => (current.length === 0 ? undefined
      : many ? current.map((a) => a.id) : current[0].id),
    empty: () => current.length === 0,
    accepts: (kind) => accepts(spec.kind, kind),
    setArtifact: (art) => show(art),
    set: (v) => {
      const ids = (Array.isArray(v) ? v : [v]).filter((x): x is string => typeof x === "string");
      show(null);
      if (ids.length === 0) return;
      const mine = ++ticket;
      Promise.all(ids.map((id) => app.api.artifact(id))).then(
        (arts) => mine === ticket && arts.forEach((art) => show(art)),
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
          refused(`${name} needs ${article(spec.kind)} ${spec.kind}; `
                  + `${file.name || "that file"} is ${art.kind}`);
          return;
        }
        show(art);
      } catch (e) {
        refused(e instanceof ApiError ? e.message : `upload failed: ${e}`);
      }
    },
  };

  /** A refused upload: a single input empties, a list keeps what it had; then the error. */
  function refused(message: string): void {
    const kept = many ? current : [];
    show(null);
    kept.forEach((art) => show(art));
    field.error(message);
  }

  /** Add an artifact (a list input appends, others replace); null empties the field. */
  function show(art: Artifact | null): void {
    ++ticket;
    current = art === null ? [] : many ? [...current, art] : [art];
    clear.hidden = current.length === 0;
    el.dispatchEvent(new Event("change", { bubbles: true }));  // the drawer keeps a draft
    el.classList.toggle("filled", current.length > 0);
    if (current.length > 0) {
      field.error(null);
      const last = current[current.length - 1];
      fill(zone, many ? h("div", { class: "pick-grid" },
                          current.map((a) => renderArtifact(app.api, a, true)))
                      : renderArtifact(app.api, last),
           h("div", { class: "caption" },
             many ? `${current.length} × ${spec.kind} · drop or click to add more` : last.name));
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
    void uploadAll([...(picker.files ?? [])]);
    picker.value = "";
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const artifactId = e.dataTransfer?.getData("application/x-stablecore-artifact");
    if (artifactId) {
      const mine = ++ticket;
      app.api.artifact(artifactId).then((art) => mine === ticket && show(art), () => {});
    } else {
      void uploadAll([...(e.dataTransfer?.files ?? [])]);
    }
  });

  async function uploadAll(files: File[]): Promise<void> {
    for (const file of many ? files : files.slice(0, 1)) await field.upload(file);  // in order
  }
  show(null);
  return field;
}

function article(word: string): string {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}
