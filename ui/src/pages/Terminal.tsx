import { useEffect, useRef, useState } from 'react';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { getToken, wsRef } from '../api';

type Status = { kind: 'connecting' } | { kind: 'open' } | { kind: 'exited'; code: number } | { kind: 'closed'; message: string };

/** The attach WebSocket URL (same origin; the token travels as a subprotocol, never in the URL). */
export function attachUrl(ws: string, session: string, cols: number, rows: number, loc: Location = window.location) {
  const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${loc.host}/api/v1/workspaces/${ws}/sessions/${encodeURIComponent(session)}/attach?cols=${cols}&rows=${rows}`;
}

export function TerminalPage({ ws, session }: { ws: string; session: string }) {
  const ref = wsRef(ws);
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState<Status>({ kind: 'connecting' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const term = new Terminal({
      cursorBlink: true,
      convertEol: false,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
      fontSize: 14,
      scrollback: 5000,
      theme: { background: '#0f1419', foreground: '#e6e6e6', cursor: '#ffcc66' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(el);
    try {
      fit.fit();
    } catch {
      /* not laid out yet */
    }
    const sock = new WebSocket(attachUrl(ref, session, term.cols, term.rows), ['berth.bearer', getToken() ?? '']);
    sock.binaryType = 'arraybuffer';
    const enc = new TextEncoder();
    let exited = false;
    const sendResize = () => {
      if (sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    };
    sock.onopen = () => {
      setStatus({ kind: 'open' });
      sendResize();
      term.focus();
    };
    sock.onmessage = (m) => {
      if (typeof m.data === 'string') {
        try {
          const c = JSON.parse(m.data);
          if (c.type === 'exit') {
            exited = true;
            setStatus({ kind: 'exited', code: c.code });
            term.write(`\r\n\x1b[2m[session exited with code ${c.code}]\x1b[0m\r\n`);
          } else if (c.type === 'error') {
            setStatus({ kind: 'closed', message: c.message || c.code });
          }
        } catch {
          term.write(m.data);
        }
      } else {
        term.write(new Uint8Array(m.data as ArrayBuffer));
      }
    };
    sock.onclose = (e) => {
      if (!exited) setStatus((s) => (s.kind === 'closed' ? s : { kind: 'closed', message: e.reason || `disconnected (code ${e.code})` }));
    };
    sock.onerror = () => {
      /* onclose follows with the details */
    };
    const d1 = term.onData((d) => {
      if (sock.readyState === WebSocket.OPEN) sock.send(enc.encode(d));
    });
    const d2 = term.onBinary((d) => {
      if (sock.readyState !== WebSocket.OPEN) return;
      const b = new Uint8Array(d.length);
      for (let i = 0; i < d.length; i++) b[i] = d.charCodeAt(i) & 0xff;
      sock.send(b);
    });
    const d3 = term.onResize(sendResize);
    const ro = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        /* ignore */
      }
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      d1.dispose();
      d2.dispose();
      d3.dispose();
      sock.onclose = null;
      sock.close();
      term.dispose();
    };
  }, [ref, session, attempt]);

  return (
    <section aria-labelledby="term-title" className="terminal-page">
      <p className="crumbs">
        <a href="#/workspaces">Workspaces</a> / <a href={`#/workspaces/${ref}`}>{ws}</a> /
      </p>
      <div className="page-head">
        <h1 id="term-title">
          Terminal <span className="muted">· {session}</span>
        </h1>
        <span className={`badge ${status.kind === 'open' ? 'state-running' : status.kind === 'connecting' ? 'state-starting' : 'state-stopped'}`} data-testid="terminal-status" role="status">
          {status.kind === 'open' ? 'connected' : status.kind === 'connecting' ? 'connecting…' : status.kind === 'exited' ? `exited (${status.code})` : 'disconnected'}
        </span>
      </div>
      {status.kind === 'closed' && (
        <div className="error-box" role="alert">
          <span>{status.message}</span>
          <button type="button" className="btn small" onClick={() => { setStatus({ kind: 'connecting' }); setAttempt((a) => a + 1); }}>
            Reconnect
          </button>
        </div>
      )}
      <p className="muted small">Closing this page detaches; the session keeps running in the workspace.</p>
      <div className="terminal" ref={box} data-testid="terminal" aria-label={`Terminal for session ${session}`} />
    </section>
  );
}
