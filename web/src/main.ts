// Entry point: the header (sessions, link state, token), the three columns, and start-up.

import "./style.css";
import { Api, ApiError } from "./api";
import { App } from "./app";
import { fill, h, modal } from "./dom";
import { Drawer } from "./drawer";
import { EventStream } from "./events";
import type { LinkState } from "./events";
import { Gallery } from "./gallery";
import { NodesPanel } from "./nodepanel";
import { Queue } from "./queue";
import { signInPage, userBadge, whoAmI } from "./signin";
import { Viewer } from "./viewer";
import { Workers } from "./workers";
import { workspace } from "./workspace";

type Header = { el: HTMLElement; link: (state: LinkState, retryInMs?: number) => void };

function header(app: App, onToken: () => void): Header {
  const select = h("select", { "aria-label": "Session", class: "session-select" });
  select.addEventListener("change", () => { app.session = select.value || null; });
  const renderSessions = () => fill(select,
    app.sessions.length ? null : h("option", { value: "" }, "new session on first job"),
    [...app.sessions].reverse().map((s) =>
      h("option", { value: s.id, selected: s.id === app.session }, s.name)));
  app.on("sessions", renderSessions);
  app.on("session", renderSessions);
  const status = h("span", { class: "linkstate connecting", role: "status", "aria-live": "polite" },
                   "connecting…");
  const banner = h("div", { class: "banner", hidden: true, role: "alert" });
  let wasLost = false;
  const link = (state: LinkState, retryInMs?: number) => {
    status.className = `linkstate ${state}`;
    status.dataset.state = state;
    if (state === "live") {
      status.textContent = "live";
      banner.hidden = !wasLost;
      banner.textContent = "Reconnected: the event stream resumed where it left off.";
      if (wasLost) setTimeout(() => { banner.hidden = true; }, 3000);
      wasLost = false;
    } else if (state === "lost") {
      wasLost = true;
      status.textContent = "reconnecting…";
      banner.hidden = false;
      banner.textContent = `Connection to the server lost; reconnecting in `
        + `${Math.ceil((retryInMs ?? 0) / 1000)} s…`;
    } else if (!wasLost) {
      status.textContent = "connecting…";
    }
  };
  const el = h("header", { class: "topbar" },
    h("div", { class: "brand" }, h("span", { class: "logo" }, "◆"), "stable-core"),
    h("div", { class: "session-box" }, h("span", { class: "muted" }, "session"), select,
      h("button", { class: "icon", type: "button", title: "New session",
                    "aria-label": "New session", onclick: () => newSession(app) }, "+")),
    h("div", { class: "spacer" }),
    status,
    h("a", { class: "button ghost", href: "/docs", target: "_blank", rel: "noopener" }, "API"),
    h("button", { class: "ghost", type: "button", title: "Access token", onclick: onToken },
      "Token"),
    banner);
  return { el, link };
}

function newSession(app: App): void {
  const name = h("input", { type: "text", placeholder: "name (optional)", pattern: "[\\w.\\- ]+",
                            maxLength: 100, "aria-label": "Session name" });
  const error = h("div", { class: "field-error" });
  const form = h("form", { class: "stack" }, name, error,
    h("button", { class: "primary", type: "submit" }, "Create"));
  const dialog = modal("New session", form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const session = await app.api.createSession(name.value.trim() || undefined);
      await app.loadSessions();
      app.session = session.id;
      dialog.close();
    } catch (err) {
      error.textContent = err instanceof Error ? err.message : String(err);
    }
  });
}

function tokenDialog(api: Api, why = ""): void {
  if (document.querySelector("dialog.token")) return;
  const input = h("input", { type: "password", value: api.token ?? "", autocomplete: "off",
                             placeholder: "access token", "aria-label": "Access token" });
  const form = h("form", { class: "stack" },
    why ? h("p", { class: "field-error" }, why) : null,
    h("p", { class: "muted" }, "The server asks for an access token. It is kept in this browser."),
    input,
    h("div", { class: "buttons" },
      h("button", { class: "primary", type: "submit" }, "Save"),
      h("button", { type: "button", onclick: () => { api.token = null; location.reload(); } },
        "Forget")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    api.token = input.value.trim() || null;
    location.reload();
  });
  modal("Access token", form, "token");
  input.focus();
}

async function boot(root: HTMLElement): Promise<void> {
  const api = new Api();
  const me = await whoAmI(api);
  if (me === null) {  // the server asks for a sign-in: a session cookie, or a token
    await signInPage(root, api, () => tokenDialog(api));
    location.reload();
    return;
  }
  const app = new App(api);
  api.onUnauthorized = () => me.via === "session" ? location.reload()
    : tokenDialog(api, api.token ? "That token was refused." : "");
  const drawer = new Drawer(app);
  const viewer = new Viewer(app, {
    useAgain: (job) => drawer.load(job),
    sendTo: (spec, art) => drawer.sendTo(spec, art),
  });
  const queue = new Queue(app, (job) => drawer.load(job));
  const gallery = new Gallery(app, viewer);
  const workers = new Workers(app);
  const nodes = new NodesPanel(app, me);
  const top = header(app, () => tokenDialog(api));
  top.el.querySelector(".spacer")?.after(userBadge(me, api));
  const events = new EventStream(api, (e) => app.apply(e), top.link);
  fill(root, top.el, h("main", { class: "layout" },
    drawer.el, workspace(app, gallery.el, viewer, drawer.el),
    h("div", { class: "side" }, queue.el, workers.el, nodes.el)));
  try {
    await app.loadCatalog();
    drawer.start();
    await app.loadSessions();
    await Promise.all([gallery.load(), app.loadJobs(), workers.refresh(), nodes.refresh()]);
  } catch (e) {
    const message = e instanceof ApiError && e.status === 401
      ? "The server needs an access token (Token, at the top right)."
      : `Cannot reach the server: ${e instanceof Error ? e.message : e}`;
    root.prepend(h("div", { class: "banner error", role: "alert" }, message));
    if (!(e instanceof ApiError && e.status === 401)) setTimeout(() => location.reload(), 5000);
    return;
  }
  events.start();
}

void boot(document.getElementById("app")!);
