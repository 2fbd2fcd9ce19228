// The workers panel: each worker's device, state, current job and loaded models, and a
// button that rescans plugins and model files without restarting the server.

import type { App } from "./app";
import { ApiError } from "./api";
import type { Worker } from "./api";
import { fill, h } from "./dom";

const POLL_MS = 10_000;  // memory figures change without events

export class Workers {
  readonly el: HTMLElement;
  private list = h("div", { class: "workers-list" });
  private timer: number | undefined;
  private rescanButton = h("button", {
    class: "link rescan", type: "button", onclick: () => void this.rescan(),
    title: "Workers look again for plugins' jobs and model files (new files become choices)",
  }, "Rescan");
  private status = h("span", { class: "rescan-status muted", role: "status",
                               "aria-live": "polite" });

  constructor(private app: App) {
    this.el = h("section", { class: "workers panel", "aria-label": "Workers" },
      h("div", { class: "panel-title" }, "Workers", this.status, this.rescanButton), this.list);
    app.on("workers", () => this.soon());
  }

  /** Ask the workers to re-announce their catalog, then reload it. */
  async rescan(): Promise<void> {
    this.rescanButton.disabled = true;
    this.status.className = "rescan-status muted";
    this.status.textContent = "rescanning…";
    try {
      const { specs } = await this.app.api.rescan();
      await this.app.loadCatalog();
      this.status.textContent = `rescanned: ${specs} jobs`;
    } catch (e) {
      this.status.className = "rescan-status warn";
      this.status.textContent = e instanceof ApiError && e.status === 403
        ? "only an admin can rescan" : `rescan failed: ${e instanceof Error ? e.message : e}`;
    } finally {
      this.rescanButton.disabled = false;
      this.soon();
    }
  }

  /** Coalesce bursts of events into one request. */
  soon(delay = 150): void {
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.refresh(), delay);
  }

  async refresh(): Promise<void> {
    try {
      this.render(await this.app.api.workers());
    } catch {
      // the link status in the header says when the server is away
    }
    this.soon(POLL_MS);
  }

  private render(workers: Worker[]): void {
    if (!workers.length) {
      fill(this.list, h("div", { class: "muted" }, "No workers."));
      return;
    }
    fill(this.list, workers.map((w) => {
      const current = w.jobs.map((id) => this.app.jobs.get(id)?.spec ?? id);
      const rss = typeof w.rss_mb === "number" ? `${Math.round(w.rss_mb)} MB` : null;
      return h("div", { class: `worker state-${w.state}`, "data-worker": w.name },
        h("div", { class: "job-line" },
          h("span", { class: "dot" }), h("strong", null, w.name),
          h("span", { class: "device" }, w.device), h("span", { class: "badge" }, w.state)),
        h("div", { class: "job-meta" },
          current.length ? h("span", null, `running ${current.join(", ")}`) : null,
          typeof w.jobs_done === "number" ? h("span", null, `${w.jobs_done} done`) : null,
          rss ? h("span", null, rss) : null,
          w.restarts ? h("span", { class: "warn" }, `${w.restarts} restarts`) : null),
        w.models.length ? h("div", { class: "models" },
          w.models.map((m) => h("span", { class: "chip", title: "loaded model" },
            `${m.key} · ${m.size_mb} MB`))) : null);
    }));
  }
}
