// Show an artifact by its kind: image, audio player, video, text, or a plot of numbers.

import type { Api, Artifact } from "./api";
import { h } from "./dom";

export const MEDIA_ACCEPT: Record<string, string> = {
  image: "image/*", mask: "image/*", audio: "audio/*", video: "video/*",
  text: ".txt,text/plain", numbers: ".json,application/json",
};

/** Which artifact kinds an input of a kind takes (mirrors the server: a mask may be any image). */
export function accepts(inputKind: string, artifactKind: string): boolean {
  const ok: Record<string, string[]> = { image: ["image", "mask"], mask: ["mask", "image"] };
  return (ok[inputKind] ?? [inputKind]).includes(artifactKind);
}

/** "0007_sd.txt2img" from "sessions/…/0007_sd.txt2img.png": the readable part of a name. */
export function label(art: Pick<Artifact, "name" | "path">): string {
  return (art.path ?? art.name).split("/").pop()!.replace(/\.[^.]+$/, "");
}

export function isImage(kind: string): boolean {
  return kind === "image" || kind === "mask" || kind === "preview";
}

/** A thumbnail (small = true) or the full view of an artifact. */
export function renderArtifact(
  api: Api, art: Pick<Artifact, "id" | "kind" | "name"> & { meta?: Record<string, unknown> },
  small = false,
): HTMLElement {
  const src = api.artifactUrl(art.id);
  const cls = `media media-${art.kind}${small ? " small" : ""}`;
  if (isImage(art.kind)) {
    return h("img", { class: cls, src, alt: art.name, loading: "lazy", draggable: true,
                      "data-artifact": art.id });
  }
  if (art.kind === "audio") {
    return small ? h("div", { class: cls }, h("div", { class: "glyph" }, "♪"))
      : h("div", { class: cls }, h("audio", { controls: true, preload: "metadata", src }));
  }
  if (art.kind === "video") {
    return h("video", { class: cls, src, controls: !small, muted: small, preload: "metadata",
                        playsInline: true });
  }
  const limit = small ? 300 : 100_000;
  if (art.kind === "json" && art.meta && "value" in art.meta) {
    return h("div", { class: cls }, jsonValue(art.meta.value, limit, small ? 60 : 0));
  }
  const box = h("div", { class: cls }, h("div", { class: "loading" }, "…"));
  void fetch(src).then(async (response) => {
    if (!response.ok) throw new Error(`${response.status}`);
    if (art.kind === "numbers") box.replaceChildren(plot(await response.json(), small));
    else if (art.kind === "json") box.replaceChildren(jsonText(await response.text(), limit));
    else box.replaceChildren(h("pre", null, (await response.text()).slice(0, small ? 300 : 1e5)));
  }).catch((e) => box.replaceChildren(h("div", { class: "muted" }, `cannot load: ${e}`)));
  return box;
}

/** A JSON value, pretty-printed (on one line while that stays short), cut after `limit`
 * characters. */
export function jsonValue(value: unknown, limit = 400, oneLine = 60): HTMLElement {
  // newlines in strings are escaped: every "\n" here is layout, safe to fold into a space
  const flat = (JSON.stringify(value, null, 1) ?? String(value)).replace(/\n */g, " ");
  return cutText(flat.length <= oneLine ? flat : JSON.stringify(value, null, 2), limit);
}

/** A JSON file's text: pretty-printed unless it is far too long to show whole anyway. */
function jsonText(text: string, limit: number): HTMLElement {
  if (text.length > 4 * limit) return cutText(text, limit);
  try {
    return jsonValue(JSON.parse(text), limit, limit > 1000 ? 0 : 60);
  } catch {
    return cutText(text, limit);
  }
}

function cutText(text: string, limit: number): HTMLElement {
  const cut = text.length > limit;
  return h("pre", { class: "json-value", title: cut ? `${text.length} characters` : null },
    cut ? `${text.slice(0, limit)}…` : text,
    cut ? h("span", { class: "muted" }, `\n(${text.length - limit} more characters)`) : null);
}

interface NumbersFile { columns?: string[]; rate?: number | null; values: number[] | number[][] }

const COLOURS = ["#7aa2f7", "#f7768e", "#9ece6a", "#e0af68", "#bb9af7", "#7dcfff"];

/** A line per column, with a legend; rows along x (seconds when the data has a rate). */
export function plot(data: NumbersFile, small = false): Element {
  const all = data.values.map((r) => (Array.isArray(r) ? r : [r]));
  const stride = Math.ceil(all.length / 600);  // a point per pixel is plenty
  const rows = all.filter((_, i) => i % stride === 0);
  const ncol = rows[0]?.length ?? 0;
  const names = data.columns ?? Array.from({ length: ncol }, (_, i) => `c${i}`);
  let lo = 0, hi = 1e-9;
  for (const v of rows.flat().filter(Number.isFinite)) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const W = 300, H = 160, pad = small ? 4 : 24;
  const x = (i: number) => pad + (i / Math.max(1, rows.length - 1)) * (W - 2 * pad);
  const y = (v: number) => H - pad - ((v - lo) / (hi - lo)) * (H - 2 * pad);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "plot");
  const line = (attrs: Record<string, string | number>, tag = "polyline") => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
    return el;
  };
  line({ x1: pad, y1: y(0), x2: W - pad, y2: y(0), class: "axis" }, "line");
  for (let c = 0; c < ncol; c++) {
    const points = rows.map((r, i) => `${x(i)},${y(r[c])}`).join(" ");
    line({ points, fill: "none", stroke: COLOURS[c % COLOURS.length], "stroke-width": 2 });
  }
  if (!small) {
    const label = (text: string, tx: number, ty: number, anchor = "start") => {
      const t = line({ x: tx, y: ty, class: "plot-label", "text-anchor": anchor }, "text");
      t.textContent = text;
    };
    label(fmt(hi), 2, pad - 8);
    label(fmt(lo), 2, H - 6);
    const span = data.rate ? `${fmt((all.length - 1) / data.rate)} s` : `${all.length} rows`;
    label(span, W - 2, H - 6, "end");
  }
  const legend = h("div", { class: "legend" },
    small ? null : names.map((n, i) => h("span", { style: `color:${COLOURS[i % COLOURS.length]}` },
      `■ ${n}`)));
  const table = small ? null : h("table", { class: "numbers" },
    h("thead", null, h("tr", null, h("th", null, "#"), names.map((n) => h("th", null, n)))),
    h("tbody", null, all.slice(0, 12).map((r, i) =>
      h("tr", null, h("td", null, i), r.map((v) => h("td", null, fmt(v)))))),
    all.length > 12 ? h("caption", null, `first 12 of ${all.length} rows`) : null);
  return h("div", { class: "plot-box" }, svg as unknown as HTMLElement, legend, table);
}

function fmt(v: number): string {
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1)
    : String(Math.round(v * 100) / 100);
}
