// The gallery of the current session: every output (images, audio, video, text, numbers),
// newest first. A click opens the viewer.

import type { App } from "./app";
import type { Artifact } from "./api";
import { fill, h } from "./dom";
import { label, renderArtifact } from "./media";
import { Viewer } from "./viewer";

export class Gallery {
  readonly el: HTMLElement;
  private grid = h("div", { class: "grid", "aria-label": "Results" });
  private heading = h("span", { class: "session-name" });
  private count = h("span", { class: "counts" });
  private artifacts: Artifact[] = [];
  private loading = 0;

  constructor(private app: App, private viewer: Viewer) {
    this.el = h("section", { class: "gallery panel", "aria-label": "Gallery" },
      h("div", { class: "panel-title" }, "Gallery", this.heading, this.count), this.grid);
    app.on("session", () => void this.load());
    app.on("sessions", () => this.title());
    app.on("outputs", (arts) => this.add(arts));
  }

  async load(): Promise<void> {
    const session = this.app.session;
    const ticket = ++this.loading;
    this.title();
    if (!session) {
      this.artifacts = [];
      return this.render();
    }
    const { artifacts } = await this.app.api.session(session);
    if (ticket !== this.loading) return;  // the session changed meanwhile
    this.artifacts = artifacts.filter((a) => a.job_id && a.kind !== "preview");
    this.render();
  }

  private title(): void {
    const session = this.app.sessions.find((s) => s.id === this.app.session);
    this.heading.textContent = session ? session.name : "";
  }

  private add(arts: Artifact[]): void {
    const known = new Set(this.artifacts.map((a) => a.id));
    const fresh = arts.filter((a) => !known.has(a.id));
    if (!fresh.length) return;
    this.artifacts = [...fresh.reverse(), ...this.artifacts];
    this.render();
  }

  private render(): void {
    const n = this.artifacts.length;
    this.count.textContent = `${n} result${n === 1 ? "" : "s"}`;
    if (!this.artifacts.length) {
      fill(this.grid, h("div", { class: "empty muted" },
        h("div", { class: "big" }, "✦"),
        "Results of this session appear here. Pick a job on the left and queue it."));
      return;
    }
    fill(this.grid, this.artifacts.map((art, i) => {
      const card = h("button", {
        class: `card kind-${art.kind}`, type: "button", draggable: true, title: art.name,
        "data-artifact": art.id, "data-kind": art.kind,
        onclick: () => this.viewer.open(this.artifacts, i),
      }, renderArtifact(this.app.api, art, true),
        h("span", { class: "card-label" }, label(art)));
      card.addEventListener("dragstart", (e) => {
        e.dataTransfer?.setData("application/x-stablecore-artifact", art.id);
      });
      return card;
    }));
  }
}
