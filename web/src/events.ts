// The live event stream: one WebSocket that resumes after the last sequence number it saw,
// and reconnects by itself (with backoff) when the connection drops.

import type { Api } from "./api";

export interface ServerEvent {
  seq: number;
  ts: number;
  type: string;
  job_id: string | null;
  session_id: string | null;
  data: Record<string, unknown>;
}

export type LinkState = "connecting" | "live" | "lost";

// sessionStorage: a reload of this tab resumes; a new tab starts from its own snapshot.
const SEQ_KEY = "stablecore.seq";
const MAX_BACKOFF_MS = 5000;

export class EventStream {
  private socket: WebSocket | null = null;
  private retries = 0;
  private timer: number | undefined;
  private stopped = false;

  constructor(
    private api: Api,
    private onEvent: (event: ServerEvent) => void,
    private onState: (state: LinkState, retryInMs?: number) => void,
  ) {}

  get lastSeq(): number | null {
    const stored = sessionStorage.getItem(SEQ_KEY);
    return stored === null ? null : Number(stored);
  }

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close();
  }

  /** Drop the connection and open a new one now (after the token changed, say). */
  restart(): void {
    this.socket?.close();
    clearTimeout(this.timer);
    this.retries = 0;
    void this.connect();
  }

  private async connect(): Promise<void> {
    // A stored seq beyond the server's last one means its data folder was reset: start over.
    try {
      const health = await this.api.health();
      if ((this.lastSeq ?? 0) > health.last_seq) sessionStorage.removeItem(SEQ_KEY);
    } catch {
      // unreachable: the socket below fails too and the retry loop takes over
    }
    if (this.stopped) return;
    const since = this.lastSeq;
    const socket = new WebSocket(this.api.wsUrl("/api/events", since === null ? {} : { since }));
    this.socket = socket;
    this.onState("connecting");
    socket.onopen = () => {
      this.retries = 0;
      this.onState("live");
    };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data as string) as ServerEvent;
      sessionStorage.setItem(SEQ_KEY, String(event.seq));
      this.onEvent(event);
    };
    socket.onclose = () => {
      if (this.socket !== socket || this.stopped) return;
      const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.retries++);
      this.onState("lost", delay);
      this.timer = window.setTimeout(() => void this.connect(), delay);
    };
  }
}
