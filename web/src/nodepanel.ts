// The Nodes panel (right column, under Workers): other machines whose workers join the pool
// over SSH (docs/remote.md). Each node's state (with the last error when it is down or
// reconnecting), GPUs, workers and their jobs, loaded models and bytes each way; live from
// node.* and worker.* events. Admins add nodes (the install log streams into the dialog) and
// remove them; everyone else is told that nodes are for admins (the API answers 403).
// Not to be confused with nodes.ts, the workflow graph editor.

import "./nodepanel.css";
import type { App } from "./app";
import { ApiError } from "./api";
import type { Me, NodeInfo, NodeRequest, Worker } from "./api";
import { fill, h, modal } from "./dom";
import type { ServerEvent } from "./events";

const POLL_MS = 10_000;  // bytes and memory change without events
const MAX_LOG_LINES = 2000;

/** How a node's state reads in the panel; the raw state stays in `data-state`. */
const LABELS: Record<string, string> = {
  failed: "down", adding: "adding…", installing: "installing…", models: "model files…",
  starting: "starting…", stopping: "stopping…",
};

export function bytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = n;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export class NodesPanel {
  readonly el: HTMLElement;
  private list = h("div", { class: "nodes-list" });
  private timer: number | undefined;
  private forbidden = false;
  private nodes: NodeInfo[] = [];
  private workers = new Map<string, Worker>();
  /** The last reason each worker went down (worker.down), until it is up again. */
  private causes = new Map<string, string>();
  /** Open dialogs following node events (install and log views). */
  private followers = new Set<(event: ServerEvent) => void>();
  private addButton = h("button", {
    class: "link add-node", type: "button", onclick: () => this.addDialog(),
    title: "Add a machine over SSH: its workers join this server's pool",
  }, "+ Add node");

  constructor(private app: App, private me: Me) {
    this.addButton.hidden = me.role !== "admin";
    this.el = h("section", { class: "nodes-panel panel", "aria-label": "Nodes" },
      h("div", { class: "panel-title" }, "Nodes", this.addButton), this.list);
    app.on("node", (event) => this.onEvent(event));
    app.on("workers", () => this.soon());
  }

  private onEvent(event: ServerEvent): void {
    for (const follow of this.followers) follow(event);
    const worker = String(event.data.worker ?? "");
    if (event.type === "worker.down" && !event.data.expected) {
      this.causes.set(worker, String(event.data.cause ?? "went down"));
    } else if (event.type === "worker.up") {
      this.causes.delete(worker);
    }
    if (event.type !== "node.log") this.soon();
  }

  /** Coalesce bursts of events into one request. */
  soon(delay = 150): void {
    clearTimeout(this.timer);
    if (this.forbidden) return;
    this.timer = window.setTimeout(() => void this.refresh(), delay);
  }

  async refresh(): Promise<void> {
    try {
      const [nodes, workers] = await Promise.all([this.app.api.nodes(), this.app.api.workers()]);
      this.nodes = nodes;
      this.workers = new Map(workers.map((w) => [w.name, w]));
      this.render();
    } catch (e) {
      if (e instanceof ApiError && e.status === 403) {
        this.forbidden = true;
        this.addButton.hidden = true;
        const who = this.me.name ? `${this.me.name} is a ${this.me.role}`
          : "this browser is not an admin";
        fill(this.list, h("div", { class: "nodes-forbidden", role: "note", title: e.message },
          "Only an admin can see and manage nodes (", who, ")."));
        return;
      }
      // the link status in the header says when the server is away
    }
    this.soon(POLL_MS);
  }

  private render(): void {
    if (!this.nodes.length) {
      fill(this.list, h("div", { class: "muted" },
        "No nodes.", this.me.role === "admin" ? " Add a machine over SSH: its workers join "
          + "the pool." : null));
      return;
    }
    fill(this.list, this.nodes.map((node) => this.nodeCard(node)));
  }

  private nodeCard(node: NodeInfo): HTMLElement {
    const admin = this.me.role === "admin";
    const causes = node.workers.map((w) => this.causes.get(w)).filter(Boolean);
    const problem = node.state === "failed" ? node.error
      : node.state === "connecting" ? causes[0] ?? "a worker lost its connection; reconnecting"
      : null;
    const gpus = node.gpus.length
      ? node.gpus.map((g) => h("span", {
          class: `chip gpu${node.devices.includes(`cuda:${g.index}`) ? " used" : ""}`,
          title: node.devices.includes(`cuda:${g.index}`) ? "a worker runs on it" : "not used" },
        `GPU ${g.index} · ${g.name}${g.memory_mb ? ` · ${Math.round(g.memory_mb / 1024)} GB` : ""}`))
      : h("span", { class: "muted" }, `no GPU · ${node.devices.length} CPU worker`
          + (node.devices.length === 1 ? "" : "s"));
    return h("div", { class: `node state-${node.state}`, "data-node": node.name,
                      "data-state": node.state },
      h("div", { class: "job-line" },
        h("span", { class: "dot" }), h("strong", { class: "node-name" }, node.name),
        h("span", { class: "node-url muted", title: `host key ${node.host_key}` },
          node.url.replace(/^ssh:\/\//, "")),
        h("span", { class: "badge node-state" }, LABELS[node.state] ?? node.state)),
      problem ? h("div", { class: "node-error", role: "status" }, problem) : null,
      h("div", { class: "node-gpus" }, gpus),
      h("div", { class: "node-workers" }, node.workers.map((name) => this.workerLine(name))),
      node.models.length ? h("div", { class: "models" }, node.models.map((m) =>
        h("span", { class: "chip", title: "loaded model" }, m))) : null,
      h("div", { class: "job-meta node-stats" },
        h("span", { class: "sent", title: "inputs sent to the node" }, `↑ ${bytes(node.bytes_sent)}`),
        h("span", { class: "received", title: "outputs and previews from the node" },
          `↓ ${bytes(node.bytes_received)}`),
        h("span", null, `${node.jobs_done} done`),
        node.cloud ? h("span", { class: "warn" },
          `${node.cloud.provider} · $${node.cloud.cost.toFixed(2)}`) : null,
        h("span", { class: "node-actions" },
          h("button", { class: "link", type: "button",
                        onclick: () => void this.logsDialog(node.name) }, "Logs"),
          admin ? h("button", { class: "link danger", type: "button",
                                onclick: () => this.removeDialog(node) }, "Remove") : null)));
  }

  private workerLine(name: string): HTMLElement {
    const w = this.workers.get(name);
    const state = w?.state ?? "down";
    const jobs = (w?.jobs ?? []).map((id) => this.app.jobs.get(id)?.spec ?? id);
    return h("div", { class: `node-worker worker state-${state}`, "data-worker": name },
      h("span", { class: "dot" }), h("span", { class: "worker-name" }, name),
      h("span", { class: "device" }, w?.device ?? ""),
      h("span", { class: "worker-state muted" }, state),
      jobs.length ? h("span", { class: "worker-jobs" }, `running ${jobs.join(", ")}`) : null);
  }

  private follow(listener: (event: ServerEvent) => void, dialog: HTMLDialogElement): void {
    this.followers.add(listener);
    dialog.addEventListener("close", () => this.followers.delete(listener));
  }

  // --- add -----------------------------------------------------------------------------------
  addDialog(): void {
    const field = (name: string, label: string, input: HTMLElement, hint?: string) =>
      h("label", { class: "node-field", "data-field": name },
        h("span", { class: "node-label" }, label), input,
        hint ? h("span", { class: "hint" }, hint) : null,
        h("span", { class: "field-error" }));
    const url = h("input", { type: "text", name: "url", required: true, autocomplete: "off",
                             placeholder: "ssh://user@host[:port]", spellcheck: false });
    const name = h("input", { type: "text", name: "name", placeholder: "default: the host name",
                              pattern: "[a-z0-9][a-z0-9_.\\-]{0,39}", autocomplete: "off" });
    const key = h("input", { type: "text", name: "key", autocomplete: "off", spellcheck: false,
                             placeholder: "~/.ssh/id_ed25519" });
    const hostKey = h("input", { type: "text", name: "host_key", autocomplete: "off",
                                 spellcheck: false, placeholder: "SHA256:…" });
    const acceptNew = h("input", { type: "checkbox", name: "accept_new_host_key" });
    const gpus = h("input", { type: "text", name: "gpus", value: "all", autocomplete: "off" });
    const cpuWorkers = h("input", { type: "number", name: "cpu_workers", min: 0, max: 64,
                                    value: "1" });
    const plugins = h("input", { type: "text", name: "plugins", autocomplete: "off",
                                 placeholder: "default: all of this server's" });
    const python = h("input", { type: "text", name: "python", value: "python3",
                                autocomplete: "off" });
    const remoteDir = h("input", { type: "text", name: "remote_dir", value: "~/.stablecore",
                                   autocomplete: "off" });
    const siteSystem = h("input", { type: "checkbox", name: "system_site_packages" });
    const models = h("select", { name: "models" },
      h("option", { value: "pull" }, "pull them there from their sources"),
      h("option", { value: "push" }, "send them from this server's cache"),
      h("option", { value: "skip" }, "skip"));
    const error = h("div", { class: "form-message error", role: "alert" });
    const trust = h("div", { class: "host-key-check", hidden: true });
    const submit = h("button", { class: "primary", type: "submit" }, "Add node");
    const form = h("form", { class: "stack node-form" },
      field("url", "SSH address", url),
      field("key", "Private key file on the server", key,
            "a path on the server's machine; empty: the server user's SSH keys and agent"),
      h("fieldset", { class: "node-host-key" }, h("legend", null, "Host key"),
        field("host_key", "Fingerprint you checked", hostKey,
              "on the machine: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"),
        h("label", { class: "check" }, acceptNew,
          " or trust the key it offers the first time (accept-new)"),
        trust),
      h("div", { class: "node-row" },
        field("gpus", "GPUs", gpus, "'all', indexes like 0,1, or empty for none"),
        field("cpu_workers", "CPU workers", cpuWorkers, "when no GPU is used")),
      h("details", { class: "node-more" }, h("summary", null, "More"),
        field("name", "Name", name),
        field("plugins", "Plugins", plugins, "comma-separated"),
        field("python", "Python there", python),
        field("remote_dir", "Folder there", remoteDir, "the venv, caches and scratch files"),
        h("label", { class: "check" }, siteSystem,
          " the venv also sees that Python's packages (e.g. a GPU image's torch)"),
        field("models", "Model files", models)),
      error,
      h("div", { class: "buttons" }, submit));
    const dialog = modal("Add node", form, "node-add");
    url.focus();

    const clearErrors = () => {
      error.textContent = "";
      for (const el of form.querySelectorAll(".node-field")) {
        el.classList.remove("invalid");
        el.querySelector(".field-error")!.textContent = "";
      }
    };
    const request = (): NodeRequest => {
      const list = plugins.value.split(",").map((p) => p.trim()).filter(Boolean);
      return {
        url: url.value.trim(), name: name.value.trim() || null, key: key.value.trim() || null,
        host_key: hostKey.value.trim() || null, accept_new_host_key: acceptNew.checked,
        gpus: gpus.value.trim(), cpu_workers: Number(cpuWorkers.value || 0),
        plugins: list.length ? list : null, python: python.value.trim() || "python3",
        remote_dir: remoteDir.value.trim() || "~/.stablecore",
        system_site_packages: siteSystem.checked,
        models: models.value as NodeRequest["models"],
      };
    };
    const send = async () => {
      clearErrors();
      trust.hidden = true;
      submit.disabled = true;
      submit.textContent = "Checking the machine…";
      const seen: ServerEvent[] = [];  // node events may arrive before the answer
      const early = (event: ServerEvent) => { seen.push(event); };
      this.follow(early, dialog);
      try {
        const { node } = await this.app.api.addNode(request());
        this.followers.delete(early);
        this.installView(dialog, node, seen);
        this.soon(0);
      } catch (e) {
        this.followers.delete(early);
        this.showError(e, form, error, trust, hostKey, () => void send());
      } finally {
        submit.disabled = false;
        submit.textContent = "Add node";
      }
    };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      void send();
    });
  }

  /** A refused add: the message on its field; an unknown host key offers its fingerprint. */
  private showError(e: unknown, form: HTMLElement, error: HTMLElement, trust: HTMLElement,
                    hostKey: HTMLInputElement, retry: () => void): void {
    if (!(e instanceof ApiError)) {
      error.textContent = e instanceof Error ? e.message : String(e);
      return;
    }
    if (e.status === 403) {
      error.textContent = `Only an admin can add nodes: ${e.message}`;
      return;
    }
    const offered = typeof e.extra.host_key === "string" ? e.extra.host_key : null;
    const unknown = offered !== null && / is not a known host/.test(e.message);
    const where = e.field ? form.querySelector(`.node-field[data-field="${e.field}"]`) : null;
    if (where) {
      where.classList.add("invalid");
      // the server's words name the CLI's flags; the box below says what to do here
      where.querySelector(".field-error")!.textContent =
        unknown ? `${e.message.split(";")[0]}.` : e.message;
    } else {
      error.textContent = e.message;
    }
    if (offered && e.field === "host_key" && !/CHANGED/.test(e.message)) {
      fill(trust,
        h("div", null, "The machine offers the host key ", h("code", { class: "fingerprint" },
          offered), ". Compare it with the one on the machine, then trust it."),
        h("button", { type: "button", class: "trust-key", onclick: () => {
          hostKey.value = offered;
          retry();
        } }, "Trust this key and add"));
      trust.hidden = false;
    }
  }

  /** The dialog after 202: the install log as it streams, until node.up or node.failed. */
  private installView(dialog: HTMLDialogElement, node: NodeInfo, seen: ServerEvent[]): void {
    const log = h("pre", { class: "node-log", "aria-label": "Install log" });
    const state = h("div", { class: "node-install-state", role: "status", "aria-live": "polite",
                             "data-state": "installing" },
      `${node.name}: ${node.devices.join(", ")}; installing…`);
    const close = h("button", { type: "button", onclick: () => dialog.close() }, "Done");
    const running = h("span", { class: "hint" }, "Closing this leaves the install running on.");
    fill(dialog.querySelector(".modal-body")!, h("div", { class: "stack node-install" },
      h("div", { class: "muted" }, `${node.url}, host key ${node.host_key}`),
      log, state,
      h("div", { class: "buttons" }, close, running)));
    dialog.querySelector("h2")!.textContent = `Adding ${node.name}`;
    dialog.classList.add("installing");
    const onEvent = (event: ServerEvent) => {
      if (event.data.node !== node.name) return;
      if (event.type === "node.log") {
        appendLine(log, String(event.data.line ?? ""));
      } else if (event.type === "node.up") {
        const workers = (event.data.workers as string[] | undefined) ?? [];
        state.dataset.state = "up";
        state.className = "node-install-state ok";
        state.textContent = `${node.name} is up: workers ${workers.join(", ")}`;
        running.hidden = true;
      } else if (event.type === "node.failed") {
        state.dataset.state = "failed";
        state.className = "node-install-state error";
        state.textContent = `${node.name} failed: ${event.data.error}`;
        running.hidden = true;
      }
    };
    for (const event of seen) onEvent(event);
    this.follow(onEvent, dialog);
  }

  // --- remove, logs ------------------------------------------------------------------------
  removeDialog(node: NodeInfo): void {
    const uninstall = h("input", { type: "checkbox", name: "uninstall" });
    const error = h("div", { class: "form-message error", role: "alert" });
    const remove = h("button", { class: "primary danger", type: "submit" }, `Remove ${node.name}`);
    const form = h("form", { class: "stack node-remove" },
      h("p", null, `Its workers stop (jobs running there go back to the queue), the connection `
        + "closes and its host key is forgotten."),
      h("label", { class: "check" }, uninstall,
        ` also uninstall: delete ${node.dir || "its folder"} there`),
      error, h("div", { class: "buttons" }, remove,
        h("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
    const dialog = modal(`Remove ${node.name}`, form, "node-remove-dialog");
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      remove.disabled = true;
      remove.textContent = uninstall.checked ? "Removing and uninstalling…" : "Removing…";
      try {
        await this.app.api.removeNode(node.name, uninstall.checked);
        dialog.close();
        this.soon(0);
      } catch (err) {
        error.textContent = err instanceof ApiError && err.status === 403
          ? `Only an admin can remove nodes: ${err.message}`
          : err instanceof Error ? err.message : String(err);
        remove.disabled = false;
        remove.textContent = `Remove ${node.name}`;
      }
    });
  }

  /** The install log and each worker's console, then new lines as they come. */
  async logsDialog(name: string): Promise<void> {
    const log = h("pre", { class: "node-log", "aria-label": `Log of ${name}` }, "loading…");
    const dialog = modal(`${name}: log`, log, "node-logs");
    const early: string[] = [];
    this.follow((event) => {
      if (event.type === "node.log" && event.data.node === name) {
        if (log.dataset.loaded) appendLine(log, String(event.data.line ?? ""));
        else early.push(String(event.data.line ?? ""));
      }
    }, dialog);
    try {
      const { lines } = await this.app.api.nodeLogs(name);
      log.textContent = "";
      log.dataset.loaded = "1";
      for (const line of [...lines, ...early.filter((l) => !lines.includes(l))]) {
        appendLine(log, line);
      }
    } catch (e) {
      log.textContent = e instanceof Error ? e.message : String(e);
    }
  }
}

function appendLine(log: HTMLElement, line: string): void {
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(h("div", { class: "log-line" }, line));
  while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild!.remove();
  if (stick) log.scrollTop = log.scrollHeight;
}
