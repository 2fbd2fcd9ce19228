// The full-size view of a result: the media, the parameters that made it, "use these again",
// "send to" another job that takes this kind of media, and download.

import type { App } from "./app";
import type { Artifact, Job } from "./api";
import { fill, h, modal, timeAgo } from "./dom";
import { accepts, label, renderArtifact } from "./media";
import { openGraph } from "./workspace";

export interface ViewerActions {
  useAgain(job: Job): void;
  sendTo(spec: string, art: Artifact): void;
}

export class Viewer {
  constructor(private app: App, private actions: ViewerActions) {}

  open(list: Artifact[], index: number): void {
    const stage = h("div", { class: "stage" });
    const side = h("aside", { class: "details" });
    const dialog = modal("Result", h("div", { class: "viewer-body" },
      h("button", { class: "nav prev", type: "button", "aria-label": "Previous",
                    onclick: () => show(index - 1) }, "‹"),
      stage,
      h("button", { class: "nav next", type: "button", "aria-label": "Next",
                    onclick: () => show(index + 1) }, "›"),
      side), "viewer");
    dialog.addEventListener("keydown", (e) => {
      if ((e.target as HTMLElement).matches("select, input")) return;
      if (e.key === "ArrowLeft") show(index - 1);
      if (e.key === "ArrowRight") show(index + 1);
    });
    const show = (i: number) => {
      if (i < 0 || i >= list.length) return;
      index = i;
      const art = list[i];
      dialog.querySelector("h2")!.textContent = `${label(art)}  (${i + 1}/${list.length})`;
      fill(stage, renderArtifact(this.app.api, art));
      fill(side, h("div", { class: "muted" }, "loading…"));
      void this.details(art, dialog).then((el) => { if (index === i) fill(side, el); });
    };
    show(index);
  }

  private async details(art: Artifact, dialog: HTMLDialogElement): Promise<HTMLElement> {
    const api = this.app.api;
    const [info, job] = await Promise.all([
      api.artifact(art.id).catch(() => art),
      art.job_id ? (this.app.jobs.get(art.job_id) ?? api.job(art.job_id).catch(() => null))
        : Promise.resolve(null),
    ]);
    const targets = [...this.app.specs.values()]
      .filter((s) => Object.values(s.inputs).some((i) => accepts(i.kind, art.kind)));
    const sendTo = h("select", { "aria-label": "Send to job" },
      h("option", { value: "" }, targets.length ? "Send to…" : "No job takes this"),
      targets.map((s) => h("option", { value: s.name }, s.name)));
    sendTo.addEventListener("change", () => {
      if (!sendTo.value) return;
      this.actions.sendTo(sendTo.value, info);
      dialog.close();
    });
    const size = info.meta.width ? `${info.meta.width}×${info.meta.height}` : null;
    return h("div", null,
      h("div", { class: "buttons" },
        job ? h("button", { class: "primary", type: "button",
                            onclick: () => { this.actions.useAgain(job); dialog.close(); } },
          "Use these again") : null,
        job && workflowOf(job) ? h("button", {
          type: "button", title: "The workflow that made it, in the node editor",
          onclick: () => { openGraph(workflowOf(job)!); dialog.close(); } }, "Open its graph")
          : null,
        targets.length ? sendTo : null,
        h("a", { class: "button", href: api.artifactUrl(art.id), download: info.name }, "Download"),
        h("a", { class: "button", href: api.artifactUrl(art.id), target: "_blank",
                 rel: "noopener" }, "Open")),
      h("dl", { class: "facts" },
        job ? [h("dt", null, "job"), h("dd", null, job.spec)] : null,
        [h("dt", null, "kind"), h("dd", null, `${info.kind} · ${info.mime}`)],
        size ? [h("dt", null, "size"), h("dd", null, size)] : null,
        info.size ? [h("dt", null, "bytes"), h("dd", null, info.size.toLocaleString())] : null,
        [h("dt", null, "made"), h("dd", null, timeAgo(info.created))],
        job?.worker ? [h("dt", null, "worker"), h("dd", null, job.worker)] : null),
      job && Object.keys(job.params).length ? h("h3", null, "Parameters") : null,
      job ? h("dl", { class: "params" }, Object.entries(job.params).map(([k, v]) =>
        [h("dt", null, k), h("dd", null, typeof v === "string" ? v : JSON.stringify(v))])) : null,
      job && Object.keys(job.inputs).length ? [h("h3", null, "Inputs"),
        h("div", { class: "inputs" }, Object.entries(job.inputs).flatMap(([name, ref]) =>
          (Array.isArray(ref) ? ref : [ref]).map((id) =>
            h("figure", null, renderArtifact(api, {
              id, name, kind: this.app.specs.get(job.spec)?.inputs[name]?.kind ?? "image" }, true),
              h("figcaption", null, name)))))] : null);
  }
}

/** The workflow run a job was a node of, if any. */
function workflowOf(job: Job): string | null {
  return (job as Job & { workflow_id?: string | null }).workflow_id ?? null;
}
