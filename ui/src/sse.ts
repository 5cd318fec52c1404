// Server-Sent Events over fetch(): EventSource cannot send an Authorization header, so the
// stream is read with a ReadableStream reader and parsed here (id:/event:/data: lines).

export interface SseMessage {
  id?: string;
  event: string;
  data: string;
}

/** Incremental SSE parser: feed it text chunks, it returns the complete messages. */
export class SseParser {
  private buf = '';
  private data: string[] = [];
  private event = '';
  private id: string | undefined;

  push(chunk: string): SseMessage[] {
    this.buf += chunk;
    const out: SseMessage[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      // A lone "\r" at the very end may be the first half of "\r\n": wait for more.
      if (m[0] === '\r' && m.index === this.buf.length - 1) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      this.line(line, out);
    }
    return out;
  }

  private line(line: string, out: SseMessage[]) {
    if (line === '') {
      if (this.data.length > 0) {
        out.push({ id: this.id, event: this.event || 'message', data: this.data.join('\n') });
      }
      this.data = [];
      this.event = '';
      this.id = undefined;
      return;
    }
    if (line.startsWith(':')) return; // comment / keep-alive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
    else if (field === 'event') this.event = value;
    else if (field === 'id') this.id = value;
  }
}

export interface StreamOptions {
  /** URL builder: gets the last seen sequence number (0 at first). */
  url: (after: number) => string;
  token: string | null;
  /** Called once per new message whose `id` (sequence number) is above every earlier one. */
  onMessage: (msg: SseMessage, seq: number) => void;
  onStatus?: (s: 'connecting' | 'open' | 'closed' | 'error', detail?: string) => void;
  /** Whether to reconnect after the server ended the stream normally. */
  reconnectOnEnd?: () => boolean;
  after?: number;
  fetchImpl?: typeof fetch;
  retryMs?: number;
}

/**
 * Follows an SSE stream, resuming with `after=<last seq>` when it drops. Messages whose id is
 * not above the last seen one are ignored, so a replay never shows anything twice.
 * Returns a function that stops it.
 */
export function followSse(opts: StreamOptions): () => void {
  const ctrl = new AbortController();
  let last = opts.after ?? 0;
  const f = opts.fetchImpl ?? fetch;
  const retry = opts.retryMs ?? 1500;
  let stopped = false;

  const run = async () => {
    while (!stopped) {
      opts.onStatus?.('connecting');
      let ended = false;
      try {
        const headers: Record<string, string> = { Accept: 'text/event-stream' };
        if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
        const res = await f(opts.url(last), { headers, signal: ctrl.signal, cache: 'no-store' });
        if (!res.ok || !res.body) {
          let message = `${res.status}`;
          try {
            const body = await res.json();
            message = body?.error?.message ?? message;
          } catch {
            /* ignore */
          }
          opts.onStatus?.('error', message);
          if (res.status === 401 || res.status === 404) return;
        } else {
          opts.onStatus?.('open');
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          const parser = new SseParser();
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            for (const msg of parser.push(dec.decode(value, { stream: true }))) {
              const seq = msg.id !== undefined ? Number(msg.id) : NaN;
              if (Number.isFinite(seq)) {
                if (seq <= last) continue;
                last = seq;
              }
              opts.onMessage(msg, Number.isFinite(seq) ? seq : last);
            }
          }
          ended = true;
          opts.onStatus?.('closed');
        }
      } catch (e) {
        if (stopped || ctrl.signal.aborted) return;
        opts.onStatus?.('error', (e as Error).message);
      }
      if (stopped) return;
      if (ended && opts.reconnectOnEnd && !opts.reconnectOnEnd()) return;
      await new Promise((r) => setTimeout(r, retry));
    }
  };
  void run();
  return () => {
    stopped = true;
    ctrl.abort();
  };
}
