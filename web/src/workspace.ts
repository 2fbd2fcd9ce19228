// The middle of the page: the session's gallery, or the node editor (loaded the first time it
// is opened, so the job drawer never waits for it). `#nodes` in the address opens the editor.

import type { App } from "./app";
import { h } from "./dom";
import type { Viewer } from "./viewer";
import "./workspace.css";

type View = "gallery" | "nodes";

const OPEN_GRAPH = "stablecore:open-graph";

/** Show a workflow run's graph, and the run, in the node editor. */
export function openGraph(workflowId: string): void {
  document.dispatchEvent(new CustomEvent(OPEN_GRAPH, { detail: workflowId }));
}

/** `drawer`: the job drawer, which makes room for a selected node's settings. */
export function workspace(app: App, gallery: HTMLElement, viewer: Viewer,
                          drawer: HTMLElement): HTMLElement {
  const nodesBox = h("div", { class: "nodes-box", hidden: true });
  const tab = (view: View, label: string) => h("button", {
    class: "view-tab", type: "button", role: "tab", "data-view": view,
    onclick: () => show(view) }, label);
  const tabs = h("div", { class: "view-tabs", role: "tablist" },
    tab("gallery", "Gallery"), tab("nodes", "Nodes"));
  let editor: Promise<unknown> | null = null;
  let nodes: { hide(): void; openRun(id: string): Promise<void> } | null = null;
  const show = (view: View, remember = true) => {
    gallery.hidden = view !== "gallery";
    nodesBox.hidden = view !== "nodes";
    tabs.querySelectorAll<HTMLElement>("[data-view]").forEach((t) =>
      t.setAttribute("aria-selected", String(t.dataset.view === view)));
    if (remember) {
      history.replaceState(null, "", view === "nodes" ? "#nodes"
                                                      : location.pathname + location.search);
    }
    if (view !== "nodes") nodes?.hide();
    if (view === "nodes" && !editor) {
      nodesBox.append(h("div", { class: "muted nodes-loading" }, "loading the node editor…"));
      editor = import("./nodes").then(async ({ NodesView }) => {
        const view = new NodesView(app, viewer, drawer);
        nodes = view;
        nodesBox.replaceChildren(view.el);
        await view.start();
      });
    }
  };
  document.addEventListener(OPEN_GRAPH, (e) => {
    show("nodes");
    void editor?.then(() => nodes?.openRun((e as CustomEvent<string>).detail));
  });
  const el = h("div", { class: "workspace" }, tabs, gallery, nodesBox);
  // the catalog is needed first: open the editor once it is there
  app.on("catalog", () => { if (location.hash === "#nodes" && !editor) show("nodes"); });
  show("gallery", false);
  return el;
}
