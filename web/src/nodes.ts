// The node editor: build a workflow graph from the catalog's jobs (Rete.js v2, drawn with its
// Lit renderer), run it, and follow every node live. Sockets are typed by media kind and a
// wrong connection is refused where it is made; a param can be fed from a text/json/numbers
// output through a param socket; a node can map over a list input. The selected node's params
// and unconnected inputs are edited with the drawer's own schema-driven fields. Graphs load
// and save as the workflow JSON of the API (a file, or a named workflow that becomes a job).
// Loaded on demand (workspace.ts), so the job drawer never pays for the editor.

import { LitElement, html, nothing } from "lit";
import { repeat } from "lit/directives/repeat.js";
import { ClassicPreset, NodeEditor } from "rete";
import type { GetSchemes } from "rete";
import { AreaExtensions, AreaPlugin } from "rete-area-plugin";
import { ClassicFlow, ConnectionPlugin, getSourceTarget } from "rete-connection-plugin";
import type { SocketData } from "rete-connection-plugin";
import { LitPlugin, Presets } from "@retejs/lit-plugin";
import type { LitArea2D, RenderEmit } from "@retejs/lit-plugin";

import type { App } from "./app";
import { inlineValue } from "./app";
import { ApiError, FINISHED } from "./api";
import type {
  Artifact, Graph, GraphNode, Job, NodeRun, OutputRef, Progress, Spec, WorkflowRun,
} from "./api";
import { fill, h, modal } from "./dom";
import type { ServerEvent } from "./events";
import { FieldError, paramField } from "./form";
import type { Field } from "./form";
import {
  connectionProblem, defaultOf, freeName, idsOf, layout, nameProblem, parseGraph, refsOf,
  splitField,
} from "./graph";
import type { InputValue, Ref } from "./graph";
import { mediaField } from "./inputs";
import { isImage, renderArtifact } from "./media";
import type { Viewer } from "./viewer";
import "./nodes.css";

const DRAFT_KEY = "stablecore.nodes";  // the graph being edited, with node positions
const RUN_KEY = "stablecore.nodes.run"; // its last run, followed again after a reload
const PARAM = "param:";                // input keys of param sockets: "param:<name>"
const NODE_WIDTH = 230;
/** Socket and wire colours by the kind they carry (nodes.css has the same for sockets). */
const KIND_COLOURS: Record<string, string> = {
  image: "#7aa2f7", mask: "#c0caf5", text: "#9ece6a", json: "#e0af68", numbers: "#ff9e64",
  audio: "#bb9af7", video: "#f7768e", param: "#565f89",
};

// --- the editor's model: typed sockets, nodes that know their job, connections -------------

class KindSocket extends ClassicPreset.Socket {
  constructor(readonly kind: string, readonly many = false) {
    super(kind);
  }
}

interface ItemStatus { jobId: string; state: string; cached: boolean; progress: Progress | null }

/** What the last run says about a node. */
interface Status {
  state: string;
  jobId: string | null;
  cached: boolean;
  error: string | null;
  outputs: Job["outputs"];
  progress: Progress | null;
  items: ItemStatus[] | null;  // a mapped node's items
}

class GNode extends ClassicPreset.Node<Record<string, KindSocket>, Record<string, KindSocket>,
                                       Record<string, never>> {
  width = NODE_WIDTH;
  height = 140;
  params: Record<string, unknown> = {};       // values that differ from the schema default
  artifacts: Record<string, string[]> = {};   // inputs filled with artifacts, not connections
  map: string | null = null;
  cache = true;
  status: Status | null = null;
  problem: { where: string; message: string } | null = null;  // a 422 about this node
  preview: { id: string; el: HTMLElement } | null = null;

  constructor(public name: string, readonly spec: Spec) {
    super(name);
    for (const [key, info] of Object.entries(spec.inputs)) {
      this.addInput(key, new ClassicPreset.Input(new KindSocket(info.kind, !!info.many), key,
                                                 !!info.many));
    }
    for (const [key, out] of Object.entries(spec.outputs)) {
      this.addOutput(key, new ClassicPreset.Output(new KindSocket(out.kind, !!out.many), key));
    }
  }

  /** Give a param a socket, so an output can feed it (or take it away). */
  linkParam(param: string, on: boolean): void {
    const key = PARAM + param;
    if (on && !this.inputs[key]) {
      const order = Object.keys(this.spec.params.properties ?? {});
      const input = new ClassicPreset.Input(new KindSocket("param"), param, false);
      input.index = 1000 + order.indexOf(param);
      this.addInput(key, input);
    } else if (!on && this.inputs[key]) {
      this.removeInput(key);
    }
  }

  linked(): string[] {
    return Object.keys(this.inputs).filter((k) => k.startsWith(PARAM)).map((k) => k.slice(6));
  }
}

class Conn extends ClassicPreset.Connection<GNode, GNode> {
  kind = "";                    // the source's kind, for the colour
  column: string | null = null; // a numbers column picked for a per-item param
}

type Schemes = GetSchemes<GNode, Conn>;
type AreaExtra = LitArea2D<Schemes>;

// --- how a node draws itself (light DOM, so the page's styles apply) -----------------------

class NodeElement extends LitElement {
  static properties = { data: { attribute: false }, emit: { attribute: false } };
  declare data: GNode;
  declare emit: RenderEmit<Schemes>;
  onOpen: (node: GNode) => void = () => {};

  createRenderRoot(): HTMLElement {
    return this;
  }

  render(): unknown {
    const node = this.data;
    if (!node) return nothing;
    const look = statusLook(node);
    const classes = ["sc-node", `state-${look.state}`, node.selected ? "selected" : "",
                     look.cached ? "cached" : "", node.problem ? "invalid" : ""].join(" ");
    const inputs = Object.entries(node.inputs).sort(([, a], [, b]) =>
      (a?.index ?? 0) - (b?.index ?? 0));
    const socket = (side: "input" | "output", key: string, payload: KindSocket) => html`
      <rete-ref class="sc-ref" .data=${{ type: "socket", side, key, nodeId: node.id, payload }}
        .emit=${this.emit}></rete-ref>`;
    const bad = (key: string) => node.problem && node.problem.where.split(".")[1] === key
      && /^(inputs|links)\./.test(node.problem.where);
    return html`
      <div class=${classes} data-node=${node.name} data-spec=${node.spec.name}
           data-state=${look.state} ?data-cached=${look.cached} style="width:${NODE_WIDTH}px">
        <div class="sc-title" title=${node.spec.description}>
          <span class="sc-name">${node.name}</span>
          <span class="sc-spec">${node.spec.name}</span>
          ${look.cached ? html`<span class="sc-badge cached" title="reused an earlier identical
            result: nothing ran">cached</span>` : nothing}
        </div>
        <div class="sc-bar" role="progressbar" aria-valuenow=${look.pct} aria-valuemin="0"
             aria-valuemax="100"><div class="sc-fill" style="width:${look.pct}%"></div></div>
        <div class="sc-ports">
          <div class="sc-ins">${repeat(inputs, ([key]) => key, ([key, input]) => {
            const param = key.startsWith(PARAM);
            const info = param ? null : node.spec.inputs[key];
            return html`<div class="sc-port in ${param ? "param" : ""} ${bad(param ? key.slice(6)
                          : key) ? "invalid" : ""}"
                data-input=${param ? nothing : key} data-param=${param ? key.slice(6) : nothing}>
              ${socket("input", key, input!.socket)}
              <span class="sc-label">${input!.label}${info?.required ? html`<b>*</b>` : nothing}
              </span>${node.map === key ? html`<span class="sc-map" title="runs once per item
                of this list">⟳ each</span>` : nothing}
              ${!param && node.artifacts[key]?.length ? html`<span class="sc-filled"
                title="an artifact is set in the inspector">●</span>` : nothing}
            </div>`;
          })}</div>
          <div class="sc-outs">${repeat(Object.entries(node.outputs), ([key]) => key,
            ([key, output]) => html`<div class="sc-port out" data-output=${key}>
              <span class="sc-label">${output!.label}${output!.socket.many || node.map
                ? html`<i> list</i>` : nothing}</span>
              ${socket("output", key, output!.socket)}
            </div>`)}</div>
        </div>
        <div class="sc-summary">${summary(node)}</div>
        ${look.preview ? html`<button class="sc-preview" type="button" title="Open the result"
            @pointerdown=${(e: Event) => e.stopPropagation()}
            @click=${() => this.onOpen(node)}>${previewEl(node, look.preview)}
            ${look.count > 1 ? html`<span class="sc-count">×${look.count}</span>` : nothing}
          </button>` : nothing}
        ${look.error ? html`<div class="sc-error" title=${look.error}>${look.error}</div>`
          : nothing}
      </div>`;
  }
}
customElements.define("sc-node", NodeElement);

/** Params set on the node (not defaults), as one short line. */
function summary(node: GNode): string {
  return Object.entries(node.params)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    .concat(node.linked().map((k) => `${k}←`)).join(" · ");
}

interface Look {
  state: string; pct: number; cached: boolean; error: string | null;
  preview: { id: string; kind: string } | null; count: number;
}

function statusLook(node: GNode): Look {
  const s = node.status;
  const error = node.problem?.message ?? (s?.state === "cancelled" ? null : s?.error ?? null);
  if (!s) return { state: "idle", pct: 0, cached: false, error, preview: null, count: 0 };
  const items = s.items ?? [];
  let state = s.state;
  let pct = s.state === "succeeded" ? 100 : fraction(s.progress);
  if (items.length && !FINISHED.has(s.state)) {
    const done = items.filter((i) => FINISHED.has(i.state)).length;
    const partial = items.filter((i) => !FINISHED.has(i.state))
      .reduce((sum, i) => sum + fraction(i.progress) / 100, 0);
    pct = Math.round((100 * (done + partial)) / items.length);
    if (items.some((i) => i.state === "running")) state = "running";
    else if (items.some((i) => i.state === "queued")) state = "queued";
  }
  const cached = s.state === "succeeded"
    && (items.length ? items.every((i) => i.cached) : s.cached);
  const refs = outputRefs(s.outputs);
  const shown = refs.find((r) => isImage(r.kind)) ?? refs[0];
  const live = s.progress?.preview ?? items.map((i) => i.progress?.preview).filter(Boolean).at(-1);
  const preview = shown ? { id: shown.id, kind: shown.kind }
    : live ? { id: live, kind: "preview" } : null;
  const count = shown ? refs.filter((r) => r.kind === shown.kind).length : 0;
  return { state, pct, cached, error, preview, count };
}

function fraction(p: Progress | null | undefined): number {
  return p && p.total > 0 ? Math.round((100 * p.step) / p.total) : 0;
}

function outputRefs(outputs: Job["outputs"]): OutputRef[] {
  return Object.values(outputs ?? {}).flatMap((o) => (Array.isArray(o) ? o : [o]))
    .filter((r): r is OutputRef => !!r);
}

let previewApi: App["api"] | null = null;
function previewEl(node: GNode, preview: { id: string; kind: string }): HTMLElement {
  if (node.preview?.id !== preview.id && previewApi) {
    const ref = outputRefs(node.status?.outputs ?? null).find((r) => r.id === preview.id);
    node.preview = { id: preview.id, el: renderArtifact(previewApi, {
      id: preview.id, kind: preview.kind, name: node.name, meta: ref ? inlineValue(ref) : {} },
      true) };
  }
  return node.preview!.el;
}

// --- the view ------------------------------------------------------------------------------

interface Following { id: string; socket: WebSocket | null; jobs: Map<string, string> }

export class NodesView {
  readonly el: HTMLElement;
  private editor = new NodeEditor<Schemes>();
  private area!: AreaPlugin<Schemes, AreaExtra>;
  private selector!: ReturnType<typeof AreaExtensions.selectableNodes>;
  private canvas = h("div", { class: "nodes-canvas", tabIndex: 0, "aria-label": "Node graph" });
  /** The selected node's settings, shown in the drawer's place (the left column). */
  private inspector = h("aside", { class: "panel nodes-inspector", hidden: true,
                                   "aria-label": "Node settings" });
  private note = h("div", { class: "nodes-note", role: "status", "aria-live": "polite" });
  private nameInput = h("input", { type: "text", class: "nodes-graph-name", value: "workflow",
                                   "aria-label": "Workflow name", maxLength: 100 });
  private picker = h("div", { class: "nodes-picker", hidden: true });
  private pickerSearch = h("input", { type: "search", placeholder: "Search jobs…",
                                      "aria-label": "Search jobs to add" });
  private pickerList = h("div", { class: "picker-list", role: "listbox" });
  private runButton = h("button", { class: "primary nodes-run", type: "button",
                                    onclick: () => void this.run() }, "▶ Run");
  private cancelButton = h("button", { class: "nodes-cancel", type: "button", hidden: true,
                                       onclick: () => void this.cancel() }, "■ Cancel");
  private runState = h("span", { class: "nodes-run-state muted" });
  private fileInput = h("input", { type: "file", accept: ".json,application/json", hidden: true,
                                   "aria-label": "Load a graph file" });
  private connection!: ConnectionPlugin<Schemes, AreaExtra>;
  private sockets = new Map<HTMLElement, SocketData & { payload: unknown }>();
  private following: Following | null = null;
  private inspected: GNode | null = null;
  private loading = false;  // connections made by a load skip the checks (the server checks)
  private saveTimer = 0;

  constructor(private app: App, private viewer: Viewer, private drawer: HTMLElement) {
    previewApi = app.api;
    this.picker.append(this.pickerSearch, this.pickerList);
    this.el = h("section", { class: "nodes", "aria-label": "Node editor" },
      h("div", { class: "nodes-toolbar" },
        this.nameInput,
        h("div", { class: "nodes-add-box" },
          h("button", { class: "nodes-add", type: "button", "aria-haspopup": "listbox",
                        onclick: () => this.togglePicker() }, "+ Node"),
          this.picker),
        this.runButton, this.cancelButton, this.runState,
        h("span", { class: "spacer" }),
        h("button", { type: "button", class: "ghost nodes-fit", title: "Fit the graph in view",
                      onclick: () => void this.fit() }, "Fit"),
        h("button", { type: "button", class: "ghost nodes-load", title: "Load a graph file (JSON)",
                      onclick: () => this.fileInput.click() }, "Open…"),
        h("button", { type: "button", class: "ghost nodes-download",
                      title: "Download the graph as JSON", onclick: () => this.download() },
          "Save"),
        h("button", { type: "button", class: "ghost nodes-saved", title: "Saved workflows",
                      onclick: () => void this.openSaved() }, "Saved"),
        h("button", { type: "button", class: "ghost nodes-save-job",
                      title: "Save as a named workflow: a job of its own",
                      onclick: () => this.saveAsJob() }, "As job…"),
        h("button", { type: "button", class: "ghost", title: "Remove every node",
                      onclick: () => void this.clear() }, "Clear"),
        this.fileInput),
      this.note,
      h("div", { class: "nodes-main" }, this.canvas));
    this.fileInput.addEventListener("change", () => void this.loadFile());
    this.pickerSearch.addEventListener("input", () => this.renderPicker());
    this.pickerSearch.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        this.pickerList.querySelector<HTMLElement>("[data-spec]")?.click();
      } else if (e.key === "Escape") this.togglePicker(false);
    });
    this.nameInput.addEventListener("input", () => this.changed());
    this.canvas.addEventListener("keydown", (e) => this.onKey(e));
    document.addEventListener("pointerdown", (e) => {  // a click elsewhere closes the picker
      if (!this.picker.hidden && !(e.target as Element).closest?.(".nodes-add-box")) {
        this.togglePicker(false);
      }
    });
    this.canvas.addEventListener("pointerdown", () => this.canvas.focus({ preventScroll: true }));
    app.on("job", (job) => this.onJob(job));
    app.on("catalog", () => this.renderPicker());
  }

  /** Set up the editor once the view is in the page (the area measures its container). */
  async start(): Promise<void> {
    const area = new AreaPlugin<Schemes, AreaExtra>(this.canvas);
    this.area = area;
    const connection = new ConnectionPlugin<Schemes, AreaExtra>();
    this.connection = connection;
    const render = new LitPlugin<Schemes, AreaExtra>();
    render.addPreset(Presets.classic.setup<Schemes, AreaExtra>({ customize: {
      node: (data) => ({ emit }) => html`<sc-node .data=${data.payload} .emit=${emit}
        .onOpen=${(n: GNode) => this.openResult(n)}></sc-node>`,
      socket: (data) => () => {
        const s = data.payload as KindSocket;
        return html`<span class="sc-socket" data-kind=${s.kind} ?data-many=${s.many}
          title=${s.kind === "param" ? "a text, json or numbers output feeds this param"
            : `${s.many ? "list of " : ""}${s.kind}`}></span>`;
      },
      // drawn in the wrapper's shadow root, where the page's styles do not reach
      connection: (data) => ({ path }) => html`<svg class="sc-connection"
          data-kind=${(data.payload as Conn).kind ?? ""} style="overflow:visible;position:absolute;
          pointer-events:none;width:9999px;height:9999px"><path d=${path} style="fill:none;
          stroke-width:3px;opacity:.85;pointer-events:auto;stroke:${KIND_COLOURS[
          (data.payload as Conn).kind ?? ""] ?? "#7aa2f7"}"></path></svg>`,
    } }));
    connection.addPreset(() => new ClassicFlow({
      canMakeConnection: (from, to) => this.canConnect(from, to),
      makeConnection: (from, to, context) => this.connect(from, to, context.editor),
    }));
    this.editor.use(area);
    area.use(connection);
    area.use(render);
    AreaExtensions.simpleNodesOrder(area);
    this.selector = AreaExtensions.selectableNodes(area, AreaExtensions.selector(), {
      accumulating: AreaExtensions.accumulateOnCtrl() });
    area.addPipe((context) => {
      if (context.type === "render" && context.data.type === "socket") {
        this.sockets.set(context.data.element, context.data as never);
      }
      if (context.type === "unmount") this.sockets.delete(context.data.element);
      if (context.type === "nodepicked") this.inspect(this.editor.getNode(context.data.id));
      if (context.type === "nodetranslated") this.changed();
      if (context.type === "pointerdown" && context.data.event.target === this.canvas) {
        this.inspect(null);
      }
      return context;
    });
    this.editor.addPipe((context) => {
      if (context.type === "connectioncreated" || context.type === "connectionremoved") {
        const target = this.editor.getNode(context.data.target);
        if (target) {
          target.problem = null;
          void this.area.update("node", target.id);
          if (this.inspected === target && !this.loading) this.inspect(target);
        }
        this.changed();
      }
      if (context.type === "noderemoved" || context.type === "nodecreated") this.changed();
      return context;
    });
    this.renderPicker();
    await this.restoreDraft();
  }

  // --- building ----------------------------------------------------------------------------

  private togglePicker(open = this.picker.hidden): void {
    this.picker.hidden = !open;
    if (open) {
      this.pickerSearch.value = "";
      this.renderPicker();
      this.pickerSearch.focus();
    }
  }

  private renderPicker(): void {
    const words = this.pickerSearch.value.toLowerCase().split(/\s+/).filter(Boolean);
    const groups = new Map<string, Spec[]>();
    for (const spec of this.app.specs.values()) {
      const hay = `${spec.name} ${spec.description}`.toLowerCase();
      if (!words.every((w) => hay.includes(w))) continue;
      groups.set(spec.plugin, [...(groups.get(spec.plugin) ?? []), spec]);
    }
    fill(this.pickerList, groups.size ? null : h("div", { class: "muted" }, "No job matches."),
      [...groups].map(([plugin, specs]) => h("div", { class: "group" },
        h("div", { class: "group-title" }, plugin),
        specs.map((spec) => h("button", {
          class: "pick-job", type: "button", role: "option", "data-spec": spec.name,
          onclick: () => { this.togglePicker(false); void this.addNode(spec.name); },
        }, h("span", { class: "job-name" }, spec.name.slice(plugin.length + 1)),
          h("span", { class: "muted" }, spec.description))))));
  }

  /** A new node of a job: right of the selected node (building a chain), else below the
   * graph, else in the middle of the view; the view follows when it lands outside. */
  async addNode(specName: string): Promise<GNode | null> {
    const spec = this.app.specs.get(specName);
    if (!spec) return null;
    const others = this.editor.getNodes();
    const node = new GNode(freeName(specName.split(".").pop()!, this.names()), spec);
    await this.editor.addNode(node);
    const at = (n: GNode) => this.area.nodeViews.get(n.id)?.position ?? { x: 0, y: 0 };
    const selected = others.find((n) => n.selected);
    let where: { x: number; y: number };
    if (selected) {
      const p = at(selected);
      where = { x: p.x + NODE_WIDTH + 60, y: p.y };
      while (others.some((n) => Math.abs(at(n).x - where.x) < 40 && Math.abs(at(n).y - where.y) < 40)) {
        where.y += 60;
      }
    } else if (others.length) {
      // room for the previews a run adds
      const bottom = Math.max(...others.map((n) => at(n).y + Math.max(this.heightOf(n), 240)));
      where = { x: Math.min(...others.map((n) => at(n).x)), y: bottom + 40 };
    } else {
      const { x, y, k } = this.area.area.transform;
      where = { x: (40 - x) / k, y: (40 - y) / k };
    }
    await this.area.translate(node.id, where);
    await this.selector.select(node.id, false);
    this.inspect(node);
    await this.reveal(node);
    return node;
  }

  private heightOf(node: GNode): number {
    const el = this.area.nodeViews.get(node.id)?.element.querySelector(".sc-node");
    return (el as HTMLElement | null)?.offsetHeight ?? node.height;
  }

  /** Pan (keeping the zoom) until a node is wholly in view. */
  private async reveal(node: GNode): Promise<void> {
    const el = this.area.nodeViews.get(node.id)?.element.querySelector(".sc-node");
    if (!el) return;
    const box = el.getBoundingClientRect();
    const view = this.canvas.getBoundingClientRect();
    const margin = 30;
    const dx = box.right > view.right - margin ? view.right - margin - box.right
      : box.left < view.left + margin ? view.left + margin - box.left : 0;
    const dy = box.bottom > view.bottom - margin ? view.bottom - margin - box.bottom
      : box.top < view.top + margin ? view.top + margin - box.top : 0;
    if (dx || dy) {
      const { x, y } = this.area.area.transform;
      await this.area.area.translate(x + dx, y + dy);
    }
  }

  /** A run's graph in the editor, and the run on it. */
  async openRun(id: string): Promise<void> {
    try {
      const run = await this.app.api.workflow(id);
      await this.load(run.graph);
      this.follow(run);
    } catch (e) {
      this.say(`Cannot open ${id}: ${e instanceof Error ? e.message : e}`, "error");
    }
  }

  /** Leaving the view: the drawer comes back. */
  hide(): void {
    this.inspect(null);
    this.togglePicker(false);
  }

  private names(except?: GNode): string[] {
    return this.editor.getNodes().filter((n) => n !== except).map((n) => n.name);
  }

  private byName(name: string): GNode | undefined {
    return this.editor.getNodes().find((n) => n.name === name);
  }

  private async removeNode(node: GNode): Promise<void> {
    for (const c of this.editor.getConnections()) {
      if (c.source === node.id || c.target === node.id) await this.editor.removeConnection(c.id);
    }
    await this.editor.removeNode(node.id);
    if (this.inspected === node) this.inspect(null);
  }

  private onKey(e: KeyboardEvent): void {
    if (e.target !== this.canvas || (e.key !== "Delete" && e.key !== "Backspace")) return;
    const chosen = this.editor.getNodes().filter((n) => n.selected);
    chosen.forEach((n) => void this.removeNode(n));
  }

  // --- connections: typed, checked where they are made -------------------------------------

  private ends(from: SocketData, to: SocketData): [SocketData, SocketData] | null {
    return (getSourceTarget(from, to) as [SocketData, SocketData] | undefined) ?? null;
  }

  /** The problem with feeding `target` from `source`, or whether it needs `map`. */
  private check(source: SocketData, target: SocketData): { problem: string | null; map?: boolean } {
    const src = this.editor.getNode(source.nodeId);
    const dst = this.editor.getNode(target.nodeId);
    if (!src || !dst) return { problem: "no such node" };
    if (src === dst) return { problem: "a node cannot feed itself" };
    if (this.reaches(dst, src)) return { problem: "that would make a cycle" };
    const out = src.spec.outputs[source.key];
    const from = { kind: out.kind, list: !!out.many || src.map !== null };
    if (target.key.startsWith(PARAM)) {
      return connectionProblem(from, { kind: "param", many: false, mapped: false,
                                       nodeMaps: dst.map, name: target.key.slice(6) });
    }
    const info = dst.spec.inputs[target.key];
    return connectionProblem(from, { kind: info.kind, many: !!info.many,
                                     mapped: dst.map === target.key, nodeMaps: dst.map,
                                     name: target.key });
  }

  /** Whether `to` is downstream of `from`. */
  private reaches(from: GNode, to: GNode): boolean {
    const seen = new Set<string>();
    const walk = (id: string): boolean => {
      if (id === to.id) return true;
      if (seen.has(id)) return false;
      seen.add(id);
      return this.editor.getConnections().filter((c) => c.source === id)
        .some((c) => walk(c.target));
    };
    return walk(from.id);
  }

  private canConnect(from: SocketData, to: SocketData): boolean {
    const ends = this.ends(from, to);
    if (!ends) return false;
    const { problem } = this.check(...ends);
    if (problem) {
      const dst = this.editor.getNode(ends[1].nodeId);
      this.say(`Refused: ${dst?.name ?? ""}.${ends[1].key.replace(PARAM, "")} — ${problem}`,
               "error", "refused");
      this.flashSocket(ends[1]);
      setTimeout(() => this.connection.drop());  // let go of the dragged end
      return false;
    }
    return true;
  }

  private connect(from: SocketData, to: SocketData, editor: NodeEditor<Schemes>): boolean {
    const ends = this.ends(from, to);
    if (!ends) return false;
    const [source, target] = ends;
    const { problem, map } = this.check(source, target);
    if (problem) return false;
    const src = editor.getNode(source.nodeId)!;
    const dst = editor.getNode(target.nodeId)!;
    if (map) {
      dst.map = target.key;
      this.say(`${dst.name} now runs once per item of ${target.key} (map)`, "ok");
      void this.revalidate();
    }
    void this.addConnection(src, source.key, dst, target.key);
    return true;
  }

  private async addConnection(src: GNode, output: string, dst: GNode, input: string,
                              column: string | null = null): Promise<void> {
    const conn = new Conn(src, output, dst, input);
    conn.kind = src.spec.outputs[output]?.kind ?? "";
    conn.column = column;
    await this.editor.addConnection(conn);
  }

  /** After a map changed: connections that no longer fit go (lists need a map). */
  private async revalidate(): Promise<void> {
    for (const c of this.editor.getConnections()) {
      const src = { nodeId: c.source, key: c.sourceOutput, side: "output" } as SocketData;
      const dst = { nodeId: c.target, key: c.targetInput, side: "input" } as SocketData;
      const { problem, map } = this.check(src, dst);
      const node = this.editor.getNode(c.target);
      if (map && node && !node.map) {
        node.map = c.targetInput;
        void this.area.update("node", node.id);
      } else if (problem || (map && node?.map !== c.targetInput)) {
        await this.editor.removeConnection(c.id);
        this.say(`Removed ${this.editor.getNode(c.source)?.name}.${c.sourceOutput} → `
                 + `${node?.name}.${c.targetInput}: ${problem ?? "it gives a list"}`, "error");
      }
    }
  }

  private flashSocket(socket: SocketData): void {
    const el = [...this.sockets].find(([, d]) => d.nodeId === socket.nodeId
      && d.key === socket.key && d.side === socket.side)?.[0];
    el?.classList.add("refused");
    setTimeout(() => el?.classList.remove("refused"), 1200);
  }

  /** Sockets below a changed row moved: tell the connection paths where they are now. */
  private async refreshSockets(node: GNode): Promise<void> {
    await this.area.update("node", node.id);
    const el = this.area.nodeViews.get(node.id)?.element.querySelector("sc-node") as
      NodeElement | null;
    await el?.updateComplete;
    for (const [element, data] of this.sockets) {
      if (data.nodeId === node.id && element.isConnected) {
        await this.area.emit({ type: "rendered", data: { ...data, element, type: "socket" } } as
          never);
      }
    }
  }

  // --- the inspector: the selected node's params and inputs, with the drawer's fields -------

  private inspect(node: GNode | null | undefined): void {
    this.inspected = node ?? null;
    if (!node) {
      this.inspector.hidden = true;
      this.drawer.hidden = false;
      fill(this.inspector);
      return;
    }
    if (!this.inspector.isConnected) this.drawer.after(this.inspector);
    const spec = node.spec;
    const conns = this.editor.getConnections();
    const feeding = (key: string) => conns.filter((c) => c.target === node.id
      && c.targetInput === key).map((c) => `${this.editor.getNode(c.source)?.name}.${c.sourceOutput}`);
    const nameError = h("div", { class: "field-error" });
    const name = h("input", { type: "text", value: node.name, "aria-label": "Node name",
                              class: "node-name" });
    name.addEventListener("change", () => {
      const wanted = name.value.trim();
      const problem = wanted === node.name ? null : nameProblem(wanted, this.names(node));
      nameError.textContent = problem ?? "";
      if (problem) return;
      node.name = wanted;
      node.label = wanted;
      void this.area.update("node", node.id);
      this.changed();
    });
    const mapChoices = Object.entries(spec.inputs).filter(([, i]) => !i.many).map(([k]) => k);
    const mapSelect = h("select", { "aria-label": "Map over", class: "node-map" },
      h("option", { value: "" }, "no: run once"),
      mapChoices.map((k) => h("option", { value: k, selected: node.map === k },
                              `yes: once per item of ${k}`)));
    mapSelect.addEventListener("change", () => {
      node.map = mapSelect.value || null;
      node.problem = null;
      void this.area.update("node", node.id);
      void this.revalidate();
      this.changed();
    });
    const cache = h("input", { type: "checkbox", checked: node.cache, class: "node-cache",
                               "aria-label": "Reuse identical results" });
    cache.addEventListener("change", () => { node.cache = cache.checked; this.changed(); });

    const fields = new Map<string, Field>();
    const inputs = Object.entries(spec.inputs).map(([key, info]) => {
      const from = feeding(key);
      if (from.length) {
        return h("div", { class: "field field-linked", "data-field": `inputs.${key}` },
          h("div", { class: "field-head" }, h("label", null, key),
            h("span", { class: "field-meta" }, `${info.kind}${info.many ? " list" : ""}`)),
          h("div", { class: "linked-from" }, `← ${from.join(", ")}`),
          h("div", { class: "field-error" }));
      }
      const field = mediaField(this.app, key, info);
      if (node.artifacts[key]?.length) field.set(info.many ? node.artifacts[key]
                                                           : node.artifacts[key][0]);
      field.el.addEventListener("change", () => {
        const v = field.value() as string | string[] | undefined;
        const ids = v === undefined ? [] : Array.isArray(v) ? v : [v];
        if (ids.length) node.artifacts[key] = ids;
        else delete node.artifacts[key];
        node.problem = null;
        void this.area.update("node", node.id);
        this.changed();
      });
      fields.set(field.key, field);
      return field.el;
    });

    const defs = (spec.params.$defs ?? {}) as Record<string, never>;
    const required = new Set(spec.params.required ?? []);
    const linked = new Set(node.linked());
    const params = Object.entries(spec.params.properties ?? {}).map(([param, schema]) => {
      const field = paramField(param, schema, required.has(param), defs);
      if (param in node.params) field.set(node.params[param]);
      fields.set(field.key, field);
      const on = linked.has(param);
      const link = h("button", { class: `icon link-param${on ? " on" : ""}`, type: "button",
                                 "aria-pressed": String(on),
                                 title: on ? "Stop feeding this param from an output"
                                   : "Feed this param from a text, json or numbers output",
                                 "aria-label": `Feed ${param} from an output` }, "⇠");
      link.addEventListener("click", () => void this.toggleLink(node, param));
      field.el.querySelector(".field-head")?.append(link);
      if (on) {
        field.el.classList.add("field-linked");
        const from = feeding(PARAM + param);
        field.el.querySelector(".field-head")?.after(h("div", { class: "linked-from" },
          from.length ? `← ${from.join(", ")}` : "← connect an output to its socket"));
        field.el.querySelectorAll("input, select, textarea, button:not(.link-param)")
          .forEach((c) => { (c as HTMLInputElement).disabled = true; });
        const numbers = conns.find((c) => c.target === node.id && c.targetInput === PARAM + param
                                          && c.kind === "numbers");
        if (numbers) field.el.append(columnPicker(numbers, () => this.changed()));
      }
      return field.el;
    });
    const paramsBox = h("div", { class: "fields" }, params.length ? params
      : h("p", { class: "muted" }, "This job takes no parameters."));
    const readParams = () => {
      for (const [key, field] of fields) {
        if (!key.startsWith("params.")) continue;
        const param = key.slice(7);
        if (node.inputs[PARAM + param]) continue;  // fed from an output
        let value: unknown;
        try {
          value = field.value();
          field.error(null);
        } catch (e) {
          if (e instanceof FieldError) field.error(e.message);
          continue;
        }
        const fallback = defaultOf(spec, param);
        if (value === undefined || JSON.stringify(value) === JSON.stringify(fallback)
            || (value === null && fallback === undefined)) delete node.params[param];
        else node.params[param] = value;
      }
      node.problem = null;
      void this.area.update("node", node.id);
      this.changed();
    };
    paramsBox.addEventListener("input", readParams);
    paramsBox.addEventListener("change", readParams);

    fill(this.inspector,
      h("div", { class: "inspector-head" }, name,
        h("button", { class: "icon", type: "button", title: "Close", "aria-label": "Close",
                      onclick: () => { void this.selector.unselect(node.id); this.inspect(null); } },
          "✕")),
      nameError,
      h("div", { class: "muted inspector-spec" }, spec.name, " — ", spec.description),
      h("div", { class: "inspector-options" },
        mapChoices.length ? h("label", null, "map", mapSelect) : null,
        h("label", { title: "Reuse an earlier identical result instead of running again" },
          cache, "reuse results")),
      inputs.length ? [h("h3", null, "Inputs"), h("div", { class: "fields" }, inputs)] : null,
      h("h3", null, "Params"), paramsBox,
      h("div", { class: "buttons" },
        h("button", { type: "button", class: "danger", onclick: () => void this.removeNode(node) },
          "Remove node")));
    // the drawer's fields use ids like "f-steps": keep this form's own
    this.inspector.querySelectorAll<HTMLElement>("[id^='f-']").forEach((el) => {
      el.id = `node-${el.id}`;
    });
    this.inspector.querySelectorAll<HTMLLabelElement>("label[for^='f-']").forEach((el) => {
      el.htmlFor = `node-${el.htmlFor}`;
    });
    this.inspector.hidden = false;
    this.drawer.hidden = true;
    if (node.problem) {
      const where = node.problem.where.replace(/^links\./, "params.");
      const field = fields.get(where);
      if (field) field.error(node.problem.message.replace(/^[\w.[\]]+: /, ""));
      else {
        const box = this.inspector.querySelector(`[data-field="${where}"] .field-error`);
        if (box) box.textContent = node.problem.message;
      }
    }
  }

  private async toggleLink(node: GNode, param: string): Promise<void> {
    const key = PARAM + param;
    const on = !node.inputs[key];
    if (!on) {
      for (const c of this.editor.getConnections()) {
        if (c.target === node.id && c.targetInput === key) await this.editor.removeConnection(c.id);
      }
    }
    node.linkParam(param, on);
    if (on) delete node.params[param];
    await this.refreshSockets(node);
    this.inspect(node);
    this.changed();
  }

  // --- the graph as JSON -------------------------------------------------------------------

  toGraph(): Graph {
    const nodes: Record<string, GraphNode> = {};
    const conns = this.editor.getConnections();
    for (const node of this.editor.getNodes()) {
      const inputs: Record<string, InputValue> = {};
      const links: Record<string, Ref> = {};
      const refTo = (c: Conn): Ref => ({ node: this.editor.getNode(c.source)!.name,
                                         output: c.sourceOutput,
                                         ...(c.column ? { column: c.column } : {}) });
      for (const key of Object.keys(node.inputs)) {
        const refs = conns.filter((c) => c.target === node.id && c.targetInput === key)
          .map(refTo);
        if (key.startsWith(PARAM)) {
          if (refs.length) links[key.slice(PARAM.length)] = refs[0];
          continue;
        }
        const items: (string | Ref)[] = refs.length || !node.spec.inputs[key].many
          ? (refs.length ? refs : node.artifacts[key] ?? []) : node.artifacts[key] ?? [];
        if (node.spec.inputs[key].many && refs.length && node.artifacts[key]?.length) {
          items.unshift(...node.artifacts[key]);
        }
        if (!items.length) continue;
        inputs[key] = items.length === 1 ? items[0] : items;
      }
      const params = { ...node.params };
      for (const key of Object.keys(links)) delete params[key];
      nodes[node.name] = {
        spec: node.spec.name,
        ...(Object.keys(params).length ? { params } : {}),
        ...(Object.keys(inputs).length ? { inputs } : {}),
        ...(Object.keys(links).length ? { links } : {}),
        ...(node.map ? { map: node.map } : {}),
        ...(node.cache ? {} : { cache: false }),
      };
    }
    return { name: this.nameInput.value.trim() || "workflow", nodes };
  }

  private positions(): Record<string, { x: number; y: number }> {
    return Object.fromEntries(this.editor.getNodes().map((n) => {
      const p = this.area.nodeViews.get(n.id)?.position ?? { x: 0, y: 0 };
      return [n.name, { x: Math.round(p.x), y: Math.round(p.y) }];
    }));
  }

  /** Replace the editor's graph; nodes of jobs not in the catalog are left out (and named). */
  async load(graph: Graph, positions?: Record<string, { x: number; y: number }>): Promise<void> {
    await this.clear(false);
    localStorage.removeItem(RUN_KEY);
    this.loading = true;
    try {
      this.nameInput.value = graph.name ?? "workflow";
      const where = { ...layout(graph), ...positions };
      const made = new Map<string, GNode>();
      const missing: string[] = [];
      for (const [name, def] of Object.entries(graph.nodes)) {
        const spec = this.app.specs.get(def.spec);
        if (!spec) {
          missing.push(`${name} (${def.spec})`);
          continue;
        }
        const node = new GNode(name, spec);
        node.params = { ...(def.params ?? {}) };
        node.map = def.map ?? null;
        node.cache = def.cache !== false;
        for (const [key, value] of Object.entries(def.inputs ?? {})) {
          const ids = idsOf(value);
          if (ids.length && key in spec.inputs) node.artifacts[key] = ids;
        }
        for (const key of Object.keys(def.links ?? {})) {
          if (spec.params.properties?.[key]) node.linkParam(key, true);
        }
        await this.editor.addNode(node);
        await this.area.translate(node.id, where[name] ?? { x: 0, y: 0 });
        made.set(name, node);
      }
      for (const [name, def] of Object.entries(graph.nodes)) {
        const node = made.get(name);
        if (!node) continue;
        const wires: [string, Ref][] = [
          ...Object.entries(def.inputs ?? {}).flatMap(([k, v]) =>
            refsOf(v).map((r): [string, Ref] => [k, r])),
          ...Object.entries(def.links ?? {}).map(([k, r]): [string, Ref] => [PARAM + k, r])];
        for (const [key, ref] of wires) {
          const src = made.get(ref.node);
          if (src?.outputs[ref.output] && node.inputs[key]) {
            await this.addConnection(src, ref.output, node, key, ref.column ?? null);
          }
        }
      }
      if (missing.length) this.say(`Not in the catalog, left out: ${missing.join(", ")}`, "error");
    } finally {
      this.loading = false;
    }
    this.changed();
    await this.fit();
  }

  /** Zoom (never above 1) and pan so every node shows. */
  async fit(): Promise<void> {
    const nodes = this.editor.getNodes();
    if (!nodes.length) return;
    for (const node of nodes) node.height = this.heightOf(node);
    const box = AreaExtensions.getBoundingBox(this.area, nodes);
    const w = this.canvas.clientWidth;
    const hgt = this.canvas.clientHeight;
    const k = Math.min(1, 0.9 * w / Math.max(1, box.width), 0.9 * hgt / Math.max(1, box.height));
    const area = this.area.area;
    area.transform.x = w / 2 - box.center.x * k;
    area.transform.y = hgt / 2 - box.center.y * k;
    await area.zoom(k, 0, 0);
  }

  async clear(forget = true): Promise<void> {
    this.stopFollowing();
    this.inspect(null);
    await this.editor.clear();
    if (forget) {
      localStorage.removeItem(RUN_KEY);
      this.say("", "ok");
      this.runState.textContent = "";
      this.changed();
    }
  }

  private changed(): void {
    if (this.loading) return;
    clearTimeout(this.saveTimer);
    this.saveTimer = window.setTimeout(() => {
      try {
        localStorage.setItem(DRAFT_KEY, JSON.stringify({ graph: this.toGraph(),
                                                         positions: this.positions() }));
      } catch {
        // storage full or off: the graph stays on screen
      }
    }, 250);
  }

  private async restoreDraft(): Promise<void> {
    const runId = localStorage.getItem(RUN_KEY);
    try {
      const draft = JSON.parse(localStorage.getItem(DRAFT_KEY) ?? "null");
      if (draft?.graph?.nodes && Object.keys(draft.graph.nodes).length) {
        await this.load(draft.graph, draft.positions);
      }
    } catch {
      localStorage.removeItem(DRAFT_KEY);
      return;
    }
    if (runId) {
      try {
        this.follow(await this.app.api.workflow(runId));
      } catch {
        // that run is gone (a fresh data folder): nothing to show
      }
    }
  }

  private download(): void {
    const graph = this.toGraph();
    const blob = new Blob([JSON.stringify(graph, null, 2) + "\n"], { type: "application/json" });
    const a = h("a", { href: URL.createObjectURL(blob), download: `${slug(graph.name ?? "workflow")}.json` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  private async loadFile(): Promise<void> {
    const file = this.fileInput.files?.[0];
    this.fileInput.value = "";
    if (!file) return;
    try {
      await this.load(parseGraph(await file.text()));
      this.say(`Loaded ${file.name}`, "ok");
    } catch (e) {
      this.say(`Cannot load ${file.name}: ${e instanceof Error ? e.message : e}`, "error");
    }
  }

  // --- saved workflows ---------------------------------------------------------------------

  private async openSaved(): Promise<void> {
    let saved: Awaited<ReturnType<App["api"]["savedWorkflows"]>>;
    try {
      saved = await this.app.api.savedWorkflows();
    } catch (e) {
      this.say(String(e instanceof Error ? e.message : e), "error");
      return;
    }
    const list = h("div", { class: "saved-list" });
    const dialog = modal("Saved workflows", list, "saved-workflows");
    const draw = () => fill(list, saved.length ? saved.map((w) => h("div", {
      class: "saved-row", "data-saved": w.name },
      h("div", null, h("strong", null, `workflow.${w.name}`),
        h("div", { class: "muted" }, w.description || `${Object.keys(w.graph.nodes).length} nodes`)),
      h("button", { type: "button", onclick: () => {
        dialog.close();
        void this.load({ ...w.graph, name: w.name });
      } }, "Open"),
      h("button", { type: "button", class: "ghost", title: "Delete", onclick: async () => {
        await this.app.api.deleteSaved(w.name);
        saved = saved.filter((s) => s.name !== w.name);
        draw();
        void this.app.loadCatalog();
      } }, "Delete"))) : h("p", { class: "muted" }, "No saved workflows yet."));
    draw();
  }

  /** Save as a named workflow (a job `workflow.<name>`), with the params, inputs and outputs
   * the user ticks exposed. */
  private saveAsJob(): void {
    const graph = this.toGraph();
    if (!Object.keys(graph.nodes).length) {
      this.say("Add nodes first", "error");
      return;
    }
    const conns = this.editor.getConnections();
    const nodes = this.editor.getNodes();
    const fed = (n: GNode, key: string) => conns.some((c) => c.target === n.id
      && c.targetInput === key);
    const sinks = new Set(nodes.filter((n) => !conns.some((c) => c.source === n.id)));
    const rows: { part: "params" | "inputs" | "outputs"; target: string; key: string;
                  on: boolean; note: string }[] = [];
    const taken = new Set<string>();
    const keyFor = (node: string, field: string) => {
      const key = taken.has(field) ? `${node}_${field}` : field;
      taken.add(key);
      return key.replace(/[^\w]/g, "_");
    };
    for (const n of nodes) {
      for (const p of Object.keys(n.spec.params.properties ?? {})) {
        if (fed(n, PARAM + p)) continue;
        rows.push({ part: "params", target: `${n.name}.${p}`, key: "", on: false,
                    note: p in n.params ? JSON.stringify(n.params[p]) : "default" });
      }
    }
    for (const n of nodes) {
      for (const [k, info] of Object.entries(n.spec.inputs)) {
        if (fed(n, k)) continue;
        rows.push({ part: "inputs", target: `${n.name}.${k}`, key: "", on: info.required,
                    note: info.kind });
      }
    }
    for (const n of nodes) {
      for (const [k, out] of Object.entries(n.spec.outputs)) {
        rows.push({ part: "outputs", target: `${n.name}.${k}`, key: "", on: sinks.has(n),
                    note: out.kind });
      }
    }
    for (const part of ["inputs", "outputs", "params"] as const) {
      for (const row of rows.filter((r) => r.part === part)) {
        const [node, field] = row.target.split(".");
        row.key = keyFor(node, field);
      }
    }
    const name = h("input", { type: "text", value: slug(graph.name ?? "workflow"), pattern: "[a-z][a-z0-9_]*",
                              "aria-label": "Name", class: "saved-name" });
    const description = h("input", { type: "text", placeholder: "what it does (optional)",
                                     "aria-label": "Description" });
    const error = h("div", { class: "field-error", role: "alert" });
    const table = (part: "params" | "inputs" | "outputs", title: string) => {
      const mine = rows.filter((r) => r.part === part);
      return mine.length ? h("fieldset", { class: "expose", "data-part": part },
        h("legend", null, title),
        mine.map((row) => {
          const box = h("input", { type: "checkbox", checked: row.on,
                                   "aria-label": `expose ${row.target}`,
                                   "data-target": row.target });
          const key = h("input", { type: "text", value: row.key, "aria-label": "exposed as" });
          box.addEventListener("change", () => { row.on = box.checked; });
          key.addEventListener("input", () => { row.key = key.value.trim(); });
          return h("div", { class: "expose-row" }, box,
            h("span", { class: "expose-target" }, row.target),
            h("span", { class: "muted" }, row.note), key);
        })) : null;
    };
    const form = h("form", { class: "stack save-job" },
      h("label", null, "Name (the job becomes workflow.<name>)", name),
      h("label", null, "Description", description),
      h("p", { class: "muted" }, "Tick what the job shows as its own params, inputs and "
                                 + "outputs; the rest stays as in the graph."),
      table("params", "Params"), table("inputs", "Inputs"), table("outputs", "Outputs"),
      error, h("button", { class: "primary", type: "submit" }, "Save"));
    const dialog = modal("Save as a workflow job", form, "save-job-dialog");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.textContent = "";
      const expose = { params: {} as Record<string, string>, inputs: {} as Record<string, string>,
                       outputs: {} as Record<string, string> };
      for (const row of rows.filter((r) => r.on)) expose[row.part][row.key] = row.target;
      try {
        const spec = await this.app.api.saveWorkflow({
          name: name.value.trim(), description: description.value.trim(), graph, expose });
        await this.app.loadCatalog();
        dialog.close();
        this.say(`Saved as ${spec.name}: it is in the job list`, "ok");
      } catch (err) {
        error.textContent = err instanceof Error ? err.message : String(err);
      }
    });
  }

  // --- running and following ---------------------------------------------------------------

  private async run(): Promise<void> {
    const graph = this.toGraph();
    if (!Object.keys(graph.nodes).length) {
      this.say("Add nodes first: + Node", "error");
      return;
    }
    for (const node of this.editor.getNodes()) {
      node.problem = null;
      void this.area.update("node", node.id);
    }
    this.runButton.disabled = true;
    let run: WorkflowRun;
    try {
      run = await this.app.api.runWorkflow({ ...graph, session: this.app.session });
    } catch (e) {
      this.runButton.disabled = false;
      this.refused(e);
      return;
    }
    if (!this.app.session) this.app.session = run.session_id;
    this.say(`Running ${run.name}`, "ok");
    this.follow(run);
  }

  /** A refused graph: the node the 422 names shows the problem (and its field, selected). */
  private refused(e: unknown): void {
    const message = e instanceof Error ? e.message : String(e);
    const where = e instanceof ApiError ? splitField(e.field) : null;
    const node = where ? this.byName(where[0]) : undefined;
    if (!node || !where) {
      this.say(`Not run: ${message}`, "error");
      return;
    }
    node.problem = { where: where[1], message };
    void this.area.update("node", node.id);
    void this.selector.select(node.id, false);
    this.inspect(node);
    this.say(`Not run: ${message}`, "error");
  }

  private async cancel(): Promise<void> {
    if (!this.following) return;
    try {
      this.apply(await this.app.api.cancelWorkflow(this.following.id));
    } catch (e) {
      this.say(String(e instanceof Error ? e.message : e), "error");
    }
  }

  /** Show a run: its snapshot now, then the events of its nodes (one WebSocket, filtered by
   * the workflow, from its first event), then the final snapshot. */
  follow(run: WorkflowRun): void {
    this.stopFollowing();
    for (const node of this.editor.getNodes()) {
      node.status = null;
      node.preview = null;
    }
    const following: Following = { id: run.id, socket: null, jobs: new Map() };
    this.following = following;
    localStorage.setItem(RUN_KEY, run.id);
    this.apply(run);
    if (run.state !== "running") return;
    const socket = new WebSocket(this.app.api.wsUrl("/api/events", { workflow: run.id,
                                                                       since: 0 }));
    following.socket = socket;
    socket.onmessage = (message) => {
      if (this.following !== following) return;
      this.onEvent(JSON.parse(message.data as string) as ServerEvent);
    };
    socket.onclose = () => {
      // dropped before the end: the snapshot says where things are, then follow again
      const again = () => {
        if (this.following !== following || following.socket !== socket) return;
        void this.app.api.workflow(run.id).then((now) => {
          if (this.following !== following) return;
          this.apply(now);
          if (now.state === "running") this.follow(now);
        }, () => setTimeout(again, 2000));
      };
      again();
    };
  }

  private stopFollowing(): void {
    const socket = this.following?.socket;
    if (this.following) this.following.socket = null;
    socket?.close();
    this.following = null;
    this.runButton.disabled = false;
    this.cancelButton.hidden = true;
  }

  /** A snapshot of the run (GET /api/workflows/{id}). */
  private apply(run: WorkflowRun): void {
    if (this.following?.id !== run.id) return;
    for (const [name, view] of Object.entries(run.nodes)) {
      const node = this.byName(name);
      this.following.jobs.set(view.job_id, name);
      view.items?.forEach((item, i) => this.following!.jobs.set(item.job_id, `${name}[${i}]`));
      if (!node) continue;
      node.status = fromRun(view, node.status);
      void this.area.update("node", node.id);
    }
    this.showRunState(run.state, run.error);
  }

  private showRunState(state: string, error: string | null = null): void {
    const done = state !== "running";
    this.runState.textContent = state;
    this.runState.dataset.state = state;
    this.runState.title = error ?? "";
    this.runButton.disabled = !done;
    this.cancelButton.hidden = done;
    if (done && this.following) {
      const cached = this.editor.getNodes().filter((n) => statusLook(n).cached).length;
      this.say(`${this.following.id}: ${state}${cached ? ` · ${cached} cached` : ""}`
               + `${error ? ` · ${error}` : ""}`, state === "succeeded" ? "ok" : "error");
    }
  }

  private onEvent(event: ServerEvent): void {
    const following = this.following!;
    if (event.type.startsWith("workflow.")) {
      const state = event.type.slice(9);
      if (state === "running") return;
      // the end: one last snapshot (outputs of every node), then stop listening
      void this.app.api.workflow(following.id).then((run) => {
        this.apply(run);
        if (this.following === following) {
          following.socket?.close();
          following.socket = null;
          this.showRunState(run.state, run.error);
        }
      });
      return;
    }
    if (!event.job_id || !event.type.startsWith("job.")) return;
    const named = typeof event.data.node === "string" ? event.data.node : null;
    if (named) following.jobs.set(event.job_id, named);
    const where = named ?? following.jobs.get(event.job_id);
    if (!where) return;
    const [name, index] = splitItem(where);
    const node = this.byName(name);
    if (!node) return;
    const status: Status = node.status ?? emptyStatus(event.job_id);
    const kind = event.type.slice(4);
    const target = index === null ? null : itemOf(status, index, event.job_id);
    if (kind === "progress") {
      const p = event.data as unknown as Progress;
      if (target) target.progress = p;
      else status.progress = { ...p, preview: p.preview ?? status.progress?.preview ?? null };
    } else if (["waiting", "queued", "started", "succeeded", "failed", "cancelled"]
                 .includes(kind)) {
      const state = kind === "started" ? "running" : kind;
      if (target) {
        target.state = state;
        target.cached = event.data.cached === true;
      } else {
        status.state = state;
        status.jobId = event.job_id;
        if (kind === "succeeded") {
          status.cached = event.data.cached === true;
          if (event.data.outputs) status.outputs = event.data.outputs as Job["outputs"];
        }
        if (kind === "failed") status.error = (event.data.error as string) ?? status.error;
      }
    } else {
      return;
    }
    node.status = status;
    void this.area.update("node", node.id);
  }

  /** Progress and previews also come on the page's own event stream (as the queue shows
   * them): a node's job gets them from there too. */
  private onJob(job: Job): void {
    const where = this.following?.jobs.get(job.id);
    if (!where || !job.progress || FINISHED.has(job.state)) return;
    const [name, index] = splitItem(where);
    const node = this.byName(name);
    if (!node?.status) return;
    const target = index === null ? node.status : itemOf(node.status, index, job.id);
    if (target.state === "succeeded") return;
    target.progress = job.progress;
    if (target.state === "queued" || target.state === "waiting") target.state = "running";
    void this.area.update("node", node.id);
  }

  /** A node's results in the viewer. */
  private openResult(node: GNode): void {
    const s = node.status;
    if (!s) return;
    const items = s.items ?? [];
    const session = this.app.session;
    const arts: Artifact[] = Object.entries(s.outputs ?? {}).flatMap(([name, out]) =>
      (Array.isArray(out) ? out : [out]).filter(Boolean).map((ref, i) => ({
        id: ref.id, kind: ref.kind, mime: ref.mime, size: 0, path: ref.path,
        name: (ref.path ?? `${node.name}.${name}`).split("/").pop()!, session_id: session,
        job_id: Array.isArray(out) && items[i] ? items[i].jobId : s.jobId,
        created: Date.now() / 1000, meta: inlineValue(ref) })));
    if (!arts.length && s.progress?.preview) {
      arts.push({ id: s.progress.preview, kind: "preview", mime: "image/png", size: 0,
                  path: null, name: `${node.name} preview`, session_id: session,
                  job_id: s.jobId, created: Date.now() / 1000, meta: {} });
    }
    if (arts.length) this.viewer.open(arts, 0);
  }

  private say(text: string, kind: "ok" | "error", tag = ""): void {
    this.note.textContent = text;
    this.note.className = `nodes-note ${kind}`;
    this.note.dataset.tag = tag;
  }
}

/** Which column of a numbers output gives each item its value (default: the first). */
function columnPicker(conn: Conn, changed: () => void): HTMLElement {
  const input = h("input", { type: "text", value: conn.column ?? "", class: "link-column",
                             placeholder: "the first", "aria-label": "Numbers column" });
  input.addEventListener("change", () => {
    conn.column = input.value.trim() || null;
    changed();
  });
  return h("label", { class: "column-row" }, "one value per item from column", input);
}

function emptyStatus(jobId: string): Status {
  return { state: "waiting", jobId, cached: false, error: null, outputs: null, progress: null,
           items: null };
}

function fromRun(view: NodeRun, old: Status | null): Status {
  const keep = old && old.jobId === view.job_id ? old : null;
  return {
    state: view.state, jobId: view.job_id, cached: view.cached, error: view.error,
    outputs: view.outputs, progress: FINISHED.has(view.state) ? null : keep?.progress ?? null,
    items: view.items ? view.items.map((item, i) => ({
      jobId: item.job_id, state: item.state, cached: item.cached,
      progress: FINISHED.has(item.state) ? null : keep?.items?.[i]?.progress ?? null })) : null,
  };
}

function itemOf(status: Status, index: number, jobId: string): ItemStatus {
  status.items ??= [];
  while (status.items.length <= index) {
    status.items.push({ jobId: "", state: "waiting", cached: false, progress: null });
  }
  const item = status.items[index];
  item.jobId ||= jobId;
  return item;
}

/** "tint[2]" -> ["tint", 2]; "tint" -> ["tint", null]. */
function splitItem(node: string): [string, number | null] {
  const m = node.match(/^(.*)\[(\d+)\]$/);
  return m ? [m[1], Number(m[2])] : [node, null];
}

function slug(name: string): string {
  const s = name.toLowerCase().replace(/[^a-z0-9_]+/g, "_").replace(/^_+|_+$/g, "");
  return /^[a-z]/.test(s) ? s.slice(0, 63) : `wf_${s}`.slice(0, 63);
}
