// The queue: running, queued and recent jobs with live progress and previews; cancel, retry,
// reorder by priority, and "use these again".

import { inlineValue, logLine } from "./app";
import type { App } from "./app";
import type { Api, Job, OutputRef } from "./api";
import { FINISHED } from "./api";
import { duration, fill, h } from "./dom";
import { isImage, jsonValue, renderArtifact } from "./media";

const SHOWN_FINISHED = 40;

export class Queue {
  readonly el: HTMLElement;
  private list = h("ol", { class: "queue-list", "aria-label": "Jobs" });
  private counts = h("span", { class: "counts" });
  private items = new Map<string, HTMLElement>();
  private dirty = new Set<string>();
  private frame = 0;
  private open = new Set<string>();  // jobs whose details are shown

  constructor(private app: App, private onUseAgain: (job: Job) => void) {
    this.el = h("section", { class: "queue panel", "aria-label": "Queue" },
      h("div", { class: "panel-title" }, "Queue", this.counts), this.list);
    app.on("job", (job) => this.schedule(job.id));
    app.on("log", ({ job }) => this.schedule(job));
    this.render();
  }

  /** Batch redraws to one per animation frame: progress events can come fast. */
  private schedule(id: string): void {
    this.dirty.add(id);
    this.frame ||= requestAnimationFrame(() => this.render());
  }

  private render(): void {
    this.frame = 0;
    for (const id of this.dirty) {
      const job = this.app.jobs.get(id);
      if (!job) continue;
      const item = this.items.get(id) ?? h("li", { class: "job", "data-job-id": id });
      this.items.set(id, item);
      this.draw(item, job);
    }
    this.dirty.clear();
    const jobs = [...this.app.jobs.values()].sort(order);
    const active = jobs.filter((j) => !FINISHED.has(j.state));
    const finished = jobs.filter((j) => FINISHED.has(j.state)).slice(0, SHOWN_FINISHED);
    const shown = [...active, ...finished];
    const keep = new Set(shown.map((j) => j.id));
    for (const [id, item] of this.items) {
      if (keep.has(id)) continue;
      item.remove();
      this.items.delete(id);
    }
    shown.forEach((job, i) => {
      const item = this.items.get(job.id)!;
      const here = this.list.children[i] ?? null;
      if (here !== item) this.list.insertBefore(item, here);
    });
    const running = active.filter((j) => j.state === "running").length;
    this.counts.textContent = `${running} running · ${active.length - running} waiting`;
    if (!shown.length) fill(this.list, h("li", { class: "empty muted" }, "No jobs yet."));
    else this.list.querySelector(".empty")?.remove();
  }

  /** Rebuild an item when its state changes; on progress only touch the bar and preview,
   * so a button under the pointer is not replaced mid-click. */
  private draw(item: HTMLElement, job: Job): void {
    const done = FINISHED.has(job.state);
    const progress = job.progress;
    const pct = job.state === "succeeded" ? 100
      : progress && progress.total > 0 ? Math.round((100 * progress.step) / progress.total) : 0;
    const firstImage = Object.values(job.outputs ?? {}).flat().find((o) => isImage(o.kind));
    const thumbId = firstImage?.id ?? progress?.preview ?? null;
    const signature = [job.state, job.priority, job.error, job.worker, thumbId !== null].join("|");
    if (item.dataset.signature !== signature) {
      item.dataset.signature = signature;
      this.build(item, job, done);
    }
    const bar = item.querySelector<HTMLElement>(".bar")!;
    bar.setAttribute("aria-valuenow", String(pct));
    bar.querySelector<HTMLElement>(".fill")!.style.width = `${pct}%`;
    item.querySelector(".pct")!.textContent = progress && !done
      ? `${progress.step}/${progress.total} · ${pct}%` : job.state === "succeeded" ? "100%" : "";
    const last = done ? undefined : this.app.logs.get(job.id)?.at(-1);
    const log = last ? logLine(last) : "";
    const logEl = item.querySelector<HTMLElement>(".job-log")!;
    logEl.textContent = log;
    logEl.title = log;
    this.drawDetails(item, job);
    const img = item.querySelector<HTMLImageElement>(".thumb img");
    const src = thumbId ? this.app.api.artifactUrl(thumbId) : null;
    if (img && src && img.getAttribute("src") !== src) img.src = src;
  }

  private build(item: HTMLElement, job: Job, done: boolean): void {
    const api = this.app.api;
    item.className = `job state-${job.state}`;
    item.dataset.state = job.state;
    const act = (label: string, title: string, fn: () => Promise<unknown> | void) =>
      h("button", { class: "icon", type: "button", title, "aria-label": title,
                    onclick: () => void Promise.resolve(fn()).catch((e) => this.flash(item, e)) },
        label);
    const put = (j: Job) => this.app.putJob(j);
    const priority = (delta: number) => () =>
      api.setPriority(job.id, Math.max(-1000, Math.min(1000, job.priority + delta))).then(put);
    const elapsed = job.started ? ((job.finished ?? Date.now() / 1000) - job.started) : null;
    const hasThumb = item.dataset.signature!.endsWith("true");
    fill(item,
      h("div", { class: "thumb" }, hasThumb ? h("img", { alt: "", class: "preview" })
        : h("span", { class: "glyph" }, GLYPHS[job.state] ?? "•")),
      h("div", { class: "job-body" },
        h("div", { class: "job-line" },
          h("span", { class: "job-spec", title: job.id }, job.spec),
          job.priority ? h("span", { class: "prio", title: "priority" },
                           `${job.priority > 0 ? "+" : ""}${job.priority}`) : null,
          h("span", { class: "badge" }, job.state)),
        h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 },
          h("div", { class: "fill" })),
        h("div", { class: "job-meta" },
          h("span", { class: "pct" }),
          elapsed !== null && done ? h("span", null, duration(elapsed)) : null,
          job.worker ? h("span", null, job.worker) : null,
          h("span", { class: "actions" },
          job.state === "queued" || job.state === "waiting"
            ? [act("▲", "Raise priority", priority(1)),
               act("▼", "Lower priority", priority(-1))]
            : null,
          done ? null : act("✕", "Cancel", () => api.cancel(job.id).then(put)),
          done ? act("↻", "Retry", () => api.retry(job.id).then(put)) : null,
          act("⇲", "Use these again", () => this.onUseAgain(job)),
          job.state === "queued" || job.state === "waiting" ? null
            : h("button", { class: "link details-toggle", type: "button", "aria-expanded": "false",
                            onclick: () => this.toggleDetails(job.id) }, "details"))),
        job.error && job.state !== "cancelled"
          ? h("div", { class: "job-error", title: job.error }, job.error) : null,
        jsonOutputs(api, job),
        h("div", { class: "job-log" }),
        h("div", { class: "job-details", hidden: true })));
  }

  /** The details area: the traceback of a failed job and the job's log lines. */
  private drawDetails(item: HTMLElement, job: Job): void {
    const box = item.querySelector<HTMLElement>(".job-details");
    const toggle = item.querySelector<HTMLElement>(".details-toggle");
    if (!box || !toggle) return;
    const open = this.open.has(job.id);
    box.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (!open) return;
    void this.app.loadDetails(job.id).catch((e) => this.flash(item, e));
    const logs = this.app.logs.get(job.id) ?? [];
    const key = [job.state, job.traceback === undefined ? "?" : job.traceback?.length,
                 logs.length].join("|");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const waiting = job.state === "failed" && job.traceback === undefined;
    fill(box,
      job.traceback ? [h("div", { class: "details-title" }, "Traceback"),
                       h("pre", { class: "traceback" }, job.traceback)] : null,
      logs.length ? [h("div", { class: "details-title" }, `Log (${logs.length})`),
        h("ol", { class: "job-logs" }, logs.map((entry) =>
          h("li", { class: `log-${(entry.stream ?? entry.level).toLowerCase()}`,
                    title: new Date(entry.ts * 1000).toLocaleTimeString() }, logLine(entry))))]
        : null,
      waiting ? h("div", { class: "muted" }, "loading…")
        : !job.traceback && !logs.length ? h("div", { class: "muted" }, "Nothing logged.") : null);
  }

  private toggleDetails(id: string): void {
    if (!this.open.delete(id)) this.open.add(id);
    this.schedule(id);
  }

  private flash(item: HTMLElement, error: unknown): void {
    const text = error instanceof Error ? error.message : String(error);
    const note = h("div", { class: "job-error" }, text);
    item.querySelector(".job-body")?.append(note);
    setTimeout(() => note.remove(), 4000);
  }
}

/** The values of a job's JSON outputs, shown inline where an image shows a thumbnail; one
 * the server did not send inline (too big) is read from its artifact. */
function jsonOutputs(api: Api, job: Job): HTMLElement | null {
  const values = Object.entries(job.outputs ?? {}).flatMap(([name, out]) => {
    const refs: OutputRef[] = Array.isArray(out) ? out : [out];
    if (!refs.length || refs.some((r) => r.kind !== "json")) return [];
    const shown = refs.every((r) => "value" in inlineValue(r))
      ? jsonValue(Array.isArray(out) ? refs.map((r) => r.value) : refs[0].value, 400)
      : refs.map((r) => renderArtifact(api, { id: r.id, kind: "json", name }, true));
    return [h("div", { class: "json-output", "data-output": name },
      h("span", { class: "output-name" }, name), shown)];
  });
  return values.length ? h("div", { class: "job-values" }, values) : null;
}

const GLYPHS: Record<string, string> = {
  waiting: "…", queued: "◷", running: "⚙", succeeded: "✓", failed: "!", cancelled: "⊘",
};

const RANK: Record<string, number> = { running: 0, queued: 1, waiting: 2 };

/** Running first, then the queue in the order it runs (priority, then age), then newest done. */
function order(a: Job, b: Job): number {
  const ra = RANK[a.state] ?? 3, rb = RANK[b.state] ?? 3;
  if (ra !== rb) return ra - rb;
  if (ra === 3) return (b.finished ?? b.created) - (a.finished ?? a.created);
  if (ra === 0) return (a.started ?? 0) - (b.started ?? 0);
  return b.priority - a.priority || a.created - b.created;
}
