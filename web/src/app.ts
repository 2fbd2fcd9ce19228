// What the views share: the API, the catalog, the known jobs and the current session.
// Server events are folded into this state here; views listen for the topics they show.

import { Api, FINISHED } from "./api";
import type {
  Artifact, Job, JobState, LogEntry, OutputRef, Plugin, Progress, Session, Spec,
} from "./api";
import type { ServerEvent } from "./events";

export interface Topics {
  job: Job;                 // a job was added or changed
  outputs: Artifact[];      // a job of the current session produced these
  session: string | null;   // the current session changed
  sessions: Session[];      // the list of sessions changed
  workers: void;            // something a worker shows may have changed
  node: ServerEvent;        // a node.*, cloud.* or worker.* event (the Nodes panel)
  log: { job: string; entry: LogEntry };
  catalog: void;            // the specs or plugins were reloaded
}

type Listener<T> = (value: T) => void;

const SESSION_KEY = "stablecore.session";
const MAX_LOG_LINES = 200;

export class App {
  readonly specs = new Map<string, Spec>();
  readonly jobs = new Map<string, Job>();
  readonly logs = new Map<string, LogEntry[]>();
  private logsLoaded = new Set<string>();  // finished jobs whose stored log was fetched
  sessions: Session[] = [];
  plugins: Plugin[] = [];
  private listeners = new Map<keyof Topics, Set<Listener<never>>>();
  private pending = new Map<string, ServerEvent[]>();  // events for jobs being fetched

  constructor(readonly api: Api) {}

  on<K extends keyof Topics>(topic: K, listener: Listener<Topics[K]>): void {
    if (!this.listeners.has(topic)) this.listeners.set(topic, new Set());
    this.listeners.get(topic)!.add(listener as Listener<never>);
  }

  emit<K extends keyof Topics>(topic: K, value: Topics[K]): void {
    for (const listener of this.listeners.get(topic) ?? []) {
      (listener as Listener<Topics[K]>)(value);
    }
  }

  get session(): string | null {
    return localStorage.getItem(SESSION_KEY);
  }

  set session(id: string | null) {
    if (id === this.session) return;
    if (id) localStorage.setItem(SESSION_KEY, id);
    else localStorage.removeItem(SESSION_KEY);
    this.emit("session", id);
  }

  async loadCatalog(): Promise<void> {
    const [specs, plugins] = await Promise.all([this.api.specs(), this.api.plugins()]);
    this.plugins = plugins;
    this.specs.clear();
    for (const spec of specs) this.specs.set(spec.name, spec);
    this.emit("catalog", undefined);
  }

  async loadSessions(): Promise<void> {
    this.sessions = await this.api.sessions();
    if (!this.sessions.some((s) => s.id === this.session)) {
      this.session = this.sessions.at(-1)?.id ?? null;
    }
    this.emit("sessions", this.sessions);
  }

  async loadJobs(): Promise<void> {
    const { jobs } = await this.api.jobs({ limit: 100 });
    for (const job of jobs.reverse()) this.putJob(job, false);
  }

  /** Add or refresh a job from the API; `announce` its outputs if it just finished. */
  putJob(job: Job, announce = true): void {
    const old = this.jobs.get(job.id);
    if (old && FINISHED.has(old.state) && !FINISHED.has(job.state)) return;
    const next = { ...old, ...job };
    this.jobs.set(job.id, next);
    this.emit("job", next);
    if (announce && next.state === "succeeded" && old?.state !== "succeeded") this.announce(next);
  }

  private announce(job: Job): void {
    if (job.session_id === this.session && job.outputs) this.emit("outputs", outputsOf(job));
  }

  /** Fold one server event into the state. */
  apply(event: ServerEvent): void {
    const { type, job_id: jobId, data } = event;
    if (type.startsWith("worker.")) this.emit("workers", undefined);
    if (/^(node|cloud|worker)\./.test(type)) this.emit("node", event);
    if (type === "session.created") void this.loadSessions();
    if (!jobId || !type.startsWith("job.")) return;
    if (type === "job.log") {
      const entry = logEntry(event.ts, data);
      const lines = this.logs.get(jobId) ?? [];
      lines.push(entry);
      this.logs.set(jobId, lines.slice(-MAX_LOG_LINES));
      this.emit("log", { job: jobId, entry });
      return;
    }
    const pending = this.pending.get(jobId);
    if (pending) {
      pending.push(event);
      return;
    }
    const job = this.jobs.get(jobId);
    if (!job) {
      void this.fetchJob(jobId, event);
      return;
    }
    if (FINISHED.has(job.state)) return;  // a replayed event about a job we know is done
    this.update(job, event);
  }

  /** A finished job's details: its traceback (if not known yet) and its stored log lines. */
  async loadDetails(id: string): Promise<void> {
    const job = this.jobs.get(id);
    if (!job || !FINISHED.has(job.state) || this.logsLoaded.has(id)) return;
    this.logsLoaded.add(id);
    const [fresh, events] = await Promise.all([
      job.state === "failed" && job.traceback === undefined ? this.api.job(id) : null,
      this.api.jobEvents(id).catch(() => []),
    ]);
    const entries = events.filter((e) => e.type === "job.log").map((e) => logEntry(e.ts, e.data));
    if (entries.length >= (this.logs.get(id)?.length ?? 0)) {
      this.logs.set(id, entries.slice(-MAX_LOG_LINES));
    }
    if (fresh) this.putJob({ ...fresh, traceback: fresh.traceback ?? null }, false);
    else this.emit("job", this.jobs.get(id)!);
  }

  private async fetchJob(id: string, first: ServerEvent): Promise<void> {
    const buffered = [first];
    this.pending.set(id, buffered);
    try {
      this.putJob(await this.api.job(id));
    } catch {
      return;  // gone or not ours: nothing to show
    } finally {
      this.pending.delete(id);
    }
    for (const event of buffered) {
      const job = this.jobs.get(id)!;
      if (!FINISHED.has(job.state)) this.update(job, event);
    }
  }

  private update(job: Job, event: ServerEvent): void {
    const { type, data, ts } = event;
    const next: Job = { ...job };
    switch (type) {
      case "job.queued":
        next.state = "queued";
        delete next.progress;
        break;
      case "job.started":
        Object.assign(next, { state: "running", started: ts, worker: data.worker ?? null });
        break;
      case "job.progress": {
        const progress = data as unknown as Progress;
        next.progress = { ...progress, preview: progress.preview ?? job.progress?.preview ?? null };
        break;
      }
      case "job.updated":
        if (typeof data.priority === "number") next.priority = data.priority;
        break;
      case "job.succeeded":
      case "job.failed":
      case "job.cancelled":
        next.state = type.slice(4) as JobState;
        next.finished = ts;
        next.error = (data.error as string | undefined) ?? next.error;
        // unknown until fetched when the event does not carry it (see loadDetails)
        next.traceback = data.traceback as string | null | undefined;
        if (data.outputs) next.outputs = data.outputs as Job["outputs"];
        break;
      default:
        return;
    }
    this.jobs.set(job.id, next);
    this.emit("job", next);
    if (job.state === "waiting" && next.state !== "waiting") void this.refreshValues(job.id);
    if (type === "job.started" || FINISHED.has(next.state)) this.emit("workers", undefined);
    if (type === "job.succeeded") this.announce(next);
  }

  /** A workflow node's params and inputs are settled when it leaves `waiting` (references to
   * other nodes become artifact ids, linked params get their values): fetch them. */
  private async refreshValues(id: string): Promise<void> {
    try {
      const { params, inputs } = await this.api.job(id);
      const job = this.jobs.get(id);
      if (!job) return;
      this.jobs.set(id, { ...job, params, inputs });
      this.emit("job", this.jobs.get(id)!);
    } catch {
      // gone: nothing to show
    }
  }
}

/** The output refs of a finished job, as artifacts (enough to show them; a JSON output
 * carries its value in `meta.value` when the server sent it inline). */
export function outputsOf(job: Job): Artifact[] {
  return Object.values(job.outputs ?? {}).flat().map((ref) => ({
    id: ref.id, kind: ref.kind, mime: ref.mime, size: 0, path: ref.path,
    name: (ref.path ?? ref.id).split("/").pop()!, session_id: job.session_id, job_id: job.id,
    created: job.finished ?? Date.now() / 1000, meta: inlineValue(ref),
  }));
}

/** A JSON output's value as `{value}`; none when the server left it out (too big: the value
 * is then null, and the artifact holds it). */
export function inlineValue(ref: OutputRef): Record<string, unknown> {
  return ref.kind === "json" && ref.value !== undefined && ref.value !== null
    ? { value: ref.value } : {};
}

function logEntry(ts: number, data: Record<string, unknown>): LogEntry {
  const stream = data.stream === "stdout" || data.stream === "stderr" ? data.stream : null;
  return { ts, level: String(data.level ?? "INFO"), msg: String(data.msg ?? ""), stream };
}

/** One log entry as a line of text: "stderr: ..." for prints, "WARNING: ..." for records. */
export function logLine(entry: LogEntry): string {
  return `${entry.stream ?? entry.level}: ${entry.msg}`;
}
