// The REST API of stable-core, typed; the access token (if any) lives in localStorage.
// Routes, methods, path and query parameters and request bodies are checked against
// openapi.d.ts, generated from the server's OpenAPI document (`npm run types`); the shapes the
// server answers with are written here, as the document leaves them open.

import type { components, paths } from "./openapi";

type Schemas = components["schemas"];

export type Schema = {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  multipleOf?: number;
  maxLength?: number;
  format?: string;
  enum?: unknown[];
  const?: unknown;
  anyOf?: Schema[];
  allOf?: Schema[];
  $ref?: string;
  items?: Schema;
  properties?: Record<string, Schema>;
  required?: string[];
  $defs?: Record<string, Schema>;
  [key: string]: unknown;
};

export interface InputSpec {
  kind: string;
  required: boolean;
  description: string | null;
  many?: boolean; // a list input: several artifacts, in order
}

export interface Spec {
  name: string;
  plugin: string;
  version: string;
  description: string;
  params: Schema;
  inputs: Record<string, InputSpec>;
  outputs: Record<string, { kind: string; many?: boolean }>; // many: a list of artifacts
}

/** An output: an artifact, and for kind "json" also the value itself. */
export interface OutputRef {
  id: string;
  kind: string;
  mime: string;
  path: string | null;
  value?: unknown;
}
export interface Progress { step: number; total: number; preview: string | null }

export type JobState = Schemas["JobState"];
export const FINISHED: ReadonlySet<string> = new Set(["succeeded", "failed", "cancelled"]);

export interface Job {
  id: string;
  spec: string;
  params: Record<string, unknown>;
  inputs: Record<string, string | string[]>; // a list input holds several artifact ids
  session_id: string;
  state: JobState;
  priority: number;
  created: number;
  started: number | null;
  finished: number | null;
  worker: string | null;
  outputs: Record<string, OutputRef | OutputRef[]> | null; // list outputs: one ref per item
  error: string | null;
  traceback?: string | null; // a failed job's full traceback
  progress?: Progress;
}

/** One `job.log` event's data: a plugin's log record or a line it printed. */
export interface LogEntry {
  ts: number;
  level: string;
  msg: string;
  stream: "stdout" | "stderr" | null;
}

export interface Artifact {
  id: string;
  kind: string;
  mime: string;
  size: number;
  name: string;
  path: string | null;
  session_id: string | null;
  job_id: string | null;
  created: number;
  meta: Record<string, unknown>;
}

export interface Plugin { name: string; version: string; jobs: string[]; error: string | null }
export interface Session { id: string; name: string; created: number }
export interface Worker {
  name: string;
  device: string;
  state: string;
  pid: number | null;
  jobs: string[];
  models: { key: string; size_mb: number }[];
  restarts: number;
  [stat: string]: unknown;
}

export type JobRequest = Schemas["JobRequest"];

/** A workflow graph (see src/stablecore/engine/workflows.py) and a run of one. */
export type Graph = Schemas["Graph"];
export type GraphNode = Schemas["Node"];
export type WorkflowRequest = Schemas["WorkflowRequest"];
export type SavedWorkflow = Schemas["SavedWorkflow"];
export interface NodeRun {
  job_id: string;
  spec: string;
  state: JobState;
  outputs: Job["outputs"];
  error: string | null;
  cached: boolean;
  items?: Omit<NodeRun, "items">[]; // a mapped node: one job per item, in order
}
export interface WorkflowRun {
  id: string;
  name: string;
  state: "running" | "succeeded" | "failed" | "cancelled";
  session_id: string;
  error: string | null;
  graph: Graph;
  nodes: Record<string, NodeRun>;
}

/** Who the caller is (GET /api/me); `csrf` comes with a web session (signin.ts). */
export interface Me {
  name: string;
  role: "admin" | "user" | "viewer";
  via: "open" | "shared-token" | "token" | "session" | "password";
  id: string | null;
  csrf: string | null;
}

/** A node: another machine whose workers join the pool over SSH (GET /api/nodes). */
export interface NodeInfo {
  name: string;
  url: string;
  /** adding, installing, models, starting, up, connecting (a worker lost its link), failed,
   * stopping (a rental being destroyed) */
  state: string;
  error: string | null;  // why it failed
  host_key: string;
  devices: string[];
  plugins: string[];
  gpus: { index: number; name: string; memory_mb: number }[];
  python: string | null;
  dir: string;
  workers: string[];
  jobs_running: number;
  jobs_done: number;
  models: string[];
  bytes_sent: number;
  bytes_received: number;
  bytes_installed: number;
  bytes_models: number;
  models_mode: string;
  idle_s: number;
  created: number;
  cloud: (Record<string, unknown> & { provider: string; cost: number }) | null;
}
export type NodeRequest = Schemas["NodeRequest"];

/** An event as the server stores it (see events.ts for the live stream). */
export interface JobEvent { seq: number; ts: number; type: string; data: Record<string, unknown> }

/** A refused request; `field` names the bad part ("params.steps", "inputs.image"). */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly field: string | null = null,
              /** the error body's other fields (a refused host key's `host_key`, say) */
              readonly extra: Record<string, unknown> = {}) {
    super(message);
  }
}

const TOKEN_KEY = "stablecore.token";

type Method = "get" | "post" | "patch" | "delete";
type Route = keyof paths;
/** The methods the document lists for a route. */
type MethodOf<R extends Route> =
  { [M in Method]: paths[R][M] extends undefined ? never : M }[Method];
type Operation<R extends Route, M extends MethodOf<R>> = NonNullable<paths[R][M]>;
type PathOf<O> = O extends { parameters: { path: infer P } } ? P : never;
type QueryOf<O> = O extends { parameters: { query?: infer Q } } ? Q : never;
type BodyOf<O> =
  O extends { requestBody?: { content: { "application/json": infer B } } } ? B
  : O extends { requestBody?: { content: { "multipart/form-data": unknown } } } ? FormData
  : never;
type Parts<O> = { query?: QueryOf<O>; body?: BodyOf<O> } & (
  [PathOf<O>] extends [never] ? { path?: never } : { path: PathOf<O> });
/** A request as `send` makes it: a method and URL of a route the document lists. */
export interface Call { method: string; path: string; body?: unknown }

/** A call of a documented route; `{job_id}`-style parts come from `path`. */
export function call<R extends Route, M extends MethodOf<R>>(
  method: M, route: R,
  ...[parts]: [PathOf<Operation<R, M>>] extends [never] ? [Parts<Operation<R, M>>?]
    : [Parts<Operation<R, M>>]
): Call {
  const { path = {}, query = {}, body } = (parts ?? {}) as {
    path?: Record<string, string>; query?: Record<string, unknown>; body?: unknown };
  const filled = route.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(path[name]));
  const qs = new URLSearchParams(Object.entries(query)
    .filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [k, String(v)])).toString();
  return { method: method.toUpperCase(), path: qs ? `${filled}?${qs}` : filled, body };
}

export class Api {
  /** Called on 401, so the UI can ask for a token. */
  onUnauthorized: () => void = () => {};
  /** A web session's CSRF token, sent with every state-changing request. */
  csrf: string | null = null;

  constructor(readonly base = "") {}

  get token(): string | null {
    return localStorage.getItem(TOKEN_KEY);
  }

  set token(value: string | null) {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  }

  /** A URL for places that cannot send headers (<img src>, WebSocket). */
  url(path: string, query: Record<string, string | number> = {}): string {
    const params = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]));
    if (this.token) params.set("token", this.token);
    const qs = params.toString();
    return `${this.base}${path}${qs ? `?${qs}` : ""}`;
  }

  artifactUrl(id: string): string {
    const { path } = call("get", "/api/artifacts/{artifact_id}", { path: { artifact_id: id } });
    return this.url(path);
  }

  wsUrl(path: string, query: Record<string, string | number> = {}): string {
    const url = new URL(this.url(path, query), location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  /** Make a call; `T` is the shape of the answer. */
  async send<T>({ method, path, body }: Call): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (this.csrf && method !== "GET") headers["X-CSRF-Token"] = this.csrf;
    let payload: BodyInit | undefined;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(this.base + path, { method, headers, body: payload });
    if (response.status === 401) this.onUnauthorized();
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return null as T;  // no content
    return (await response.json()) as T;
  }

  health = () => this.send<{ last_seq: number; ready: boolean }>(call("get", "/api/health"));
  me = () => this.send<Me>(call("get", "/api/me"));
  login = (name: string, password: string) => this.send<{ user: { name: string }; csrf: string }>(
    call("post", "/api/login", { body: { name, password } }));
  logout = () => this.send<{ ok: boolean }>(call("post", "/api/logout"));
  specs = () => this.send<Spec[]>(call("get", "/api/specs"));
  plugins = () => this.send<Plugin[]>(call("get", "/api/plugins"));
  jobs = (query: QueryOf<Operation<"/api/jobs", "get">> = {}) =>
    this.send<{ jobs: Job[]; total: number }>(call("get", "/api/jobs", { query }));
  job = (id: string) => this.send<Job>(call("get", "/api/jobs/{job_id}", { path: { job_id: id } }));
  submit = (body: JobRequest) => this.send<Job>(call("post", "/api/jobs", { body }));
  cancel = (id: string) =>
    this.send<Job>(call("post", "/api/jobs/{job_id}/cancel", { path: { job_id: id } }));
  retry = (id: string) =>
    this.send<Job>(call("post", "/api/jobs/{job_id}/retry", { path: { job_id: id } }));
  setPriority = (id: string, priority: number) =>
    this.send<Job>(call("patch", "/api/jobs/{job_id}", { path: { job_id: id },
                                                          body: { priority } }));
  artifact = (id: string) => this.send<Artifact>(
    call("get", "/api/artifacts/{artifact_id}/info", { path: { artifact_id: id } }));
  sessions = () => this.send<Session[]>(call("get", "/api/sessions"));
  session = (id: string, limit = 500) => this.send<Session & { artifacts: Artifact[] }>(
    call("get", "/api/sessions/{session_id}", { path: { session_id: id }, query: { limit } }));
  createSession = (name?: string) =>
    this.send<Session>(call("post", "/api/sessions", { body: name ? { name } : {} }));
  workers = () => this.send<Worker[]>(call("get", "/api/workers"));
  /** Workers re-announce their catalog (new model files appear); admins only. */
  rescan = () =>
    this.send<{ plugins: Plugin[]; specs: number }>(call("post", "/api/plugins/rescan"));

  /** Nodes (admins only: others get 403). Adding answers once the machine is checked; the
   * install goes on as `node.log` events until `node.up` or `node.failed`. */
  nodes = () => this.send<NodeInfo[]>(call("get", "/api/nodes"));
  addNode = (body: NodeRequest) =>
    this.send<{ node: NodeInfo; since: number }>(call("post", "/api/nodes", { body }));
  removeNode = (name: string, uninstall = false) =>
    this.send<{ removed: string; uninstalled: boolean }>(
      call("delete", "/api/nodes/{name}", { path: { name }, query: { uninstall } }));
  nodeLogs = (name: string) => this.send<{ lines: string[] }>(
    call("get", "/api/nodes/{name}/logs", { path: { name } }));

  runWorkflow = (body: WorkflowRequest) =>
    this.send<WorkflowRun>(call("post", "/api/workflows", { body }));
  workflow = (id: string) => this.send<WorkflowRun>(
    call("get", "/api/workflows/{workflow_id}", { path: { workflow_id: id } }));
  cancelWorkflow = (id: string) => this.send<WorkflowRun>(
    call("post", "/api/workflows/{workflow_id}/cancel", { path: { workflow_id: id } }));
  savedWorkflows = () => this.send<(SavedWorkflow & { created: number })[]>(
    call("get", "/api/workflows/saved"));
  saveWorkflow = (body: SavedWorkflow) =>
    this.send<Spec>(call("post", "/api/workflows/saved", { body }));
  deleteSaved = (name: string) => this.send<null>(
    call("delete", "/api/workflows/saved/{name}", { path: { name } }));

  /** Every stored event of a finished job (its SSE stream ends with the job's last event). */
  async jobEvents(id: string): Promise<JobEvent[]> {
    const { path } = call("get", "/api/jobs/{job_id}/events", { path: { job_id: id } });
    const response = await fetch(this.url(path));
    if (!response.ok) throw await errorOf(response);
    return (await response.text()).split("\n")
      .filter((line) => line.startsWith("data: "))
      .map((line) => JSON.parse(line.slice(6)));
  }

  upload(file: Blob, name: string, session?: string | null): Promise<Artifact> {
    const form = new FormData();
    form.append("file", file, name);
    if (session) form.append("session", session);
    return this.send<Artifact>(call("post", "/api/artifacts", { body: form }));
  }
}

/** Errors are {error, detail, field} (ErrorBody); older servers answered body errors with
 * FastAPI's {detail: [{loc, msg}]}. */
async function errorOf(response: Response): Promise<ApiError> {
  let body: Partial<Pick<Schemas["ErrorBody"], "error" | "field">> & { detail?: unknown } = {};
  try {
    body = await response.json();
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`);
  }
  if (Array.isArray(body.detail)) {
    const first = body.detail[0] as { loc?: (string | number)[]; msg?: string } | undefined;
    const loc = (first?.loc ?? []).filter((part) => part !== "body").join(".");
    const message = `${loc ? `${loc}: ` : ""}${first?.msg ?? "invalid request"}`;
    return new ApiError(response.status, message, loc || null);
  }
  const detail = typeof body.detail === "string" ? body.detail : body.error ?? response.statusText;
  const { error: _error, detail: _detail, field, ...extra } = body;
  return new ApiError(response.status, detail, field ?? null, extra);
}
