// The rules of a workflow graph that the node editor needs before the server sees it: which
// output may feed which input or param, node names, and a layout for a graph read from a file.
// The server checks the whole graph again (a 422 names the node and field); these rules only
// refuse a wrong connection early, where the user makes it.

import type { Graph, GraphNode, Spec } from "./api";
import { accepts } from "./media";

export type Ref = { node: string; output: string; column?: string | null };
export type InputValue = NonNullable<GraphNode["inputs"]>[string];

/** Output kinds a param may be fed from; `numbers` only gives one value per item of a map. */
export const LINKABLE = new Set(["text", "json", "numbers"]);

/** What one end of a prospective connection is. */
export interface OutputEnd { kind: string; list: boolean }     // list: many, or a mapped node
export interface InputEnd {
  kind: string;           // a media kind, or "param" for a param fed from an output
  many: boolean;          // a list input
  mapped: boolean;        // the node maps over this input
  nodeMaps: string | null; // the input the node maps over, if any
  name: string;
}

/** Why `from` may not feed `to` (null: it may), and whether connecting should turn `map` on. */
export function connectionProblem(from: OutputEnd, to: InputEnd):
    { problem: string | null; map?: boolean } {
  if (to.kind === "param") {
    if (!LINKABLE.has(from.kind)) {
      return { problem: `a param takes a text, json or numbers output, not ${from.kind}` };
    }
    if (from.kind === "numbers" && !to.nodeMaps) {
      return { problem: "numbers feed a param one value per item: set the node to map over "
                        + "a list input first" };
    }
    return { problem: null };
  }
  if (!accepts(to.kind, from.kind)) {
    return { problem: `${to.name} takes ${article(to.kind)} ${to.kind}, this gives `
                      + `${from.list ? "a list of " : article(from.kind) + " "}${from.kind}` };
  }
  if (from.list && !to.many && !to.mapped) {
    if (to.nodeMaps) {
      return { problem: `a list goes into one ${to.kind}; the node already maps over `
                        + `${to.nodeMaps}` };
    }
    return { problem: null, map: true };  // run once per item
  }
  return { problem: null };
}

/** The node name `base`, or `base2`, `base3`, ... whichever is free. */
export function freeName(base: string, taken: Iterable<string>): string {
  const used = new Set(taken);
  const clean = base.replace(/[^\w-]/g, "_") || "node";
  if (!used.has(clean)) return clean;
  for (let i = 2; ; i++) if (!used.has(`${clean}${i}`)) return `${clean}${i}`;
}

/** A problem with a node name, or null. */
export function nameProblem(name: string, taken: Iterable<string>): string | null {
  if (!name) return "a name is needed";
  if (/[.[\]]/.test(name)) return "a node name may not contain '.', '[' or ']'";
  if ([...taken].includes(name)) return `there is already a node ${name}`;
  return null;
}

/** The refs an input value holds (one, several, or none for plain artifact ids). */
export function refsOf(value: InputValue | undefined): Ref[] {
  const items = value === undefined ? [] : Array.isArray(value) ? value : [value];
  return items.filter((v): v is Ref => typeof v === "object" && v !== null);
}

/** The artifact ids an input value holds. */
export function idsOf(value: InputValue | undefined): string[] {
  const items = value === undefined ? [] : Array.isArray(value) ? value : [value];
  return items.filter((v): v is string => typeof v === "string");
}

/** Columns by depth (longest path from a node without upstream), rows in file order. */
export function layout(graph: Graph): Record<string, { x: number; y: number }> {
  const names = Object.keys(graph.nodes);
  const ups = (name: string) => {
    const node = graph.nodes[name];
    return [...Object.values(node.inputs ?? {}).flatMap((v) => refsOf(v)),
            ...Object.values(node.links ?? {})].map((r) => r.node).filter((n) => n in graph.nodes);
  };
  const depth = new Map<string, number>();
  const visit = (name: string, seen: Set<string>): number => {
    if (depth.has(name)) return depth.get(name)!;
    if (seen.has(name)) return 0;  // a cycle: the server names it
    seen.add(name);
    const d = Math.max(-1, ...ups(name).map((u) => visit(u, seen))) + 1;
    depth.set(name, d);
    return d;
  };
  names.forEach((n) => visit(n, new Set()));
  const rows = new Map<number, number>();
  const out: Record<string, { x: number; y: number }> = {};
  for (const name of names) {
    const d = depth.get(name) ?? 0;
    const row = rows.get(d) ?? 0;
    rows.set(d, row + 1);
    out[name] = { x: d * 290, y: row * 280 + (d % 2) * 30 };
  }
  return out;
}

/** A param's default, as the schema gives it (undefined: none). */
export function defaultOf(spec: Spec, param: string): unknown {
  const schema = spec.params.properties?.[param];
  if (!schema) return undefined;
  if (schema.default !== undefined) return schema.default;
  const defs = spec.params.$defs ?? {};
  const ref = schema.$ref ?? schema.allOf?.[0]?.$ref;
  return ref ? defs[ref.split("/").pop()!]?.default : undefined;
}

/** "nodes.draw.inputs.image" -> ["draw", "inputs.image"]; null for fields outside nodes. */
export function splitField(field: string | null): [string, string] | null {
  const m = field?.match(/^nodes\.([^.]+)(?:\.(.*))?$/);
  return m ? [m[1], m[2] ?? ""] : null;
}

/** A JSON file's content as a graph, or an error saying what is wrong with it. */
export function parseGraph(text: string): Graph {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error("not a JSON file");
  }
  const graph = (doc as { graph?: unknown }).graph ?? doc;  // a saved workflow holds one too
  const nodes = (graph as Graph | null)?.nodes;
  if (!nodes || typeof nodes !== "object" || Array.isArray(nodes)) {
    throw new Error("not a workflow graph: it has no \"nodes\"");
  }
  for (const [name, node] of Object.entries(nodes)) {
    if (typeof node?.spec !== "string") throw new Error(`node ${name} names no "spec"`);
  }
  return graph as Graph;
}

function article(word: string): string {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}
