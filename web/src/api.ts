// The REST API of stable-core, typed; the access token (if any) lives in localStorage.

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
  outputs: Record<string, { kind: string }>;
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

export type JobState = "waiting" | "queued" | "running" | "succeeded" | "failed" | "cancelled";
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

export interface JobRequest {
  spec: string;
  params: Record<string, unknown>;
  inputs: Record<string, string | string[]>;
  session?: string | null;
  priority?: number;
}

/** An event as the server stores it (see events.ts for the live stream). */
export interface JobEvent { seq: number; ts: number; type: string; data: Record<string, unknown> }

/** A refused request; `field` names the bad part ("params.steps", "inputs.image"). */
export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly field: string | null = null) {
    super(message);
  }
}

const TOKEN_KEY = "stablecore.token";

export class Api {
  /** Called on 401, so the UI can ask for a token. */
  onUnauthorized: () => void = () => {};

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
    return this.url(`/api/artifacts/${encodeURIComponent(id)}`);
  }

  wsUrl(path: string, query: Record<string, string | number> = {}): string {
    const url = new URL(this.url(path, query), location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let payload: BodyInit | undefined;
    if (body instanceof FormData) payload = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(this.base + path, { method, headers, body: payload });
    if (response.status === 401) this.onUnauthorized();
    if (!response.ok) throw await errorOf(response);
    return (await response.json()) as T;
  }

  specs = () => this.request<Spec[]>("GET", "/api/specs");
  plugins = () => this.request<Plugin[]>("GET", "/api/plugins");
  jobs = (query: Record<string, string | number> = {}) => {
    const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]));
    return this.request<{ jobs: Job[]; total: number }>("GET", `/api/jobs?${qs}`);
  };
  job = (id: string) => this.request<Job>("GET", `/api/jobs/${encodeURIComponent(id)}`);
  submit = (req: JobRequest) => this.request<Job>("POST", "/api/jobs", req);
  cancel = (id: string) => this.request<Job>("POST", `/api/jobs/${encodeURIComponent(id)}/cancel`);
  retry = (id: string) => this.request<Job>("POST", `/api/jobs/${encodeURIComponent(id)}/retry`);
  setPriority = (id: string, priority: number) =>
    this.request<Job>("PATCH", `/api/jobs/${encodeURIComponent(id)}`, { priority });
  artifact = (id: string) =>
    this.request<Artifact>("GET", `/api/artifacts/${encodeURIComponent(id)}/info`);
  sessions = () => this.request<Session[]>("GET", "/api/sessions");
  session = (id: string, limit = 500) =>
    this.request<Session & { artifacts: Artifact[] }>(
      "GET", `/api/sessions/${encodeURIComponent(id)}?limit=${limit}`);
  createSession = (name?: string) =>
    this.request<Session>("POST", "/api/sessions", name ? { name } : {});
  workers = () => this.request<Worker[]>("GET", "/api/workers");
  /** Workers re-announce their catalog (new model files appear); admins only. */
  rescan = () =>
    this.request<{ plugins: Plugin[]; specs: number }>("POST", "/api/plugins/rescan");

  /** Every stored event of a finished job (its SSE stream ends with the job's last event). */
  async jobEvents(id: string): Promise<JobEvent[]> {
    const response = await fetch(this.url(`/api/jobs/${encodeURIComponent(id)}/events`));
    if (!response.ok) throw await errorOf(response);
    return (await response.text()).split("\n")
      .filter((line) => line.startsWith("data: "))
      .map((line) => JSON.parse(line.slice(6)));
  }

  upload(file: Blob, name: string, session?: string | null): Promise<Artifact> {
    const form = new FormData();
    form.append("file", file, name);
    if (session) form.append("session", session);
    return this.request<Artifact>("POST", "/api/artifacts", form);
  }
}

/** Our own errors are {error, detail, field}; FastAPI's body errors are {detail: [{loc, msg}]}. */
async function errorOf(response: Response): Promise<ApiError> {
  let body: { detail?: unknown; field?: string | null; error?: string } = {};
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
  return new ApiError(response.status, detail, body.field ?? null);
}
