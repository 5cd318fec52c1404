import { useEffect, useRef, useState } from 'react';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { ApiError, api, getToken, post, wsRef, type Session, type Workspace } from '../api';
import { attachProblem, BAR_KEYS, keySequence, wantsKeyBar, withCtrl, type BarKey } from '../keys';
import { wsProtocols } from '../auth';
import { useCan } from '../roles';

type Status =
  | { kind: 'connecting' }
  | { kind: 'open' }
  | { kind: 'exited'; code: number }
  | { kind: 'closed'; message: string; canStart?: boolean };

/** What the REST API says when an attach fails before the socket opens (the browser only sees 1006). */
async function diagnose(ref: string, session: string, fallback: string) {
  let workspace: Workspace | null = null;
  try {
    workspace = await api<Workspace>(`/workspaces/${ref}`);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) return { message: fallback, canStart: false };
  }
  let sessions: Session[] | null = null;
  if (workspace?.state === 'running') {
    try {
      sessions = await api<Session[]>(`/workspaces/${ref}/sessions`);
    } catch {
      /* keep the fallback */
    }
  }
  return attachProblem(workspace, sessions, session, fallback);
}

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
  // A viewer watches: the server drops its keys, so the terminal takes none.
  const readOnly = !useCan('operate');
  const canOperate = !readOnly;
  // The key bar sends through the live socket; Ctrl latches for the next typed key.
  const sendRef = useRef<(data: string) => void>(() => {});
  const termRef = useRef<Terminal | null>(null);
  const ctrlRef = useRef(false);
  const [ctrl, setCtrl] = useState(false);
  const [starting, setStarting] = useState(false);
  const showBar = !readOnly && wantsKeyBar();

  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const term = new Terminal({
      cursorBlink: !readOnly,
      disableStdin: readOnly,
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
    const sock = new WebSocket(attachUrl(ref, session, term.cols, term.rows), wsProtocols(getToken()));
    sock.binaryType = 'arraybuffer';
    const enc = new TextEncoder();
    let exited = false;
    let opened = false;
    let disposed = false;
    termRef.current = term;
    sendRef.current = (d: string) => {
      if (sock.readyState === WebSocket.OPEN) sock.send(enc.encode(d));
    };
    const sendResize = () => {
      if (sock.readyState === WebSocket.OPEN) sock.send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
    };
    sock.onopen = () => {
      opened = true;
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
      if (exited) return;
      const fallback = e.reason || `disconnected (code ${e.code})`;
      setStatus((s) => (s.kind === 'closed' ? s : { kind: 'closed', message: fallback }));
      // Never opened: the upgrade was refused (404, workspace stopped…); ask the API why.
      if (!opened && !e.reason) {
        void diagnose(ref, session, fallback).then((p) => {
          if (!disposed) setStatus({ kind: 'closed', message: p.message, canStart: p.canStart });
        });
      }
    };
    sock.onerror = () => {
      /* onclose follows with the details */
    };
    const d1 = term.onData((d) => {
      if (ctrlRef.current) {
        ctrlRef.current = false;
        setCtrl(false);
        d = withCtrl(d);
      }
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
      disposed = true;
      termRef.current = null;
      sendRef.current = () => {};
      ro.disconnect();
      d1.dispose();
      d2.dispose();
      d3.dispose();
      sock.onclose = null;
      sock.close();
      term.dispose();
    };
  }, [ref, session, attempt, readOnly]);

  const reconnect = () => {
    setStatus({ kind: 'connecting' });
    setAttempt((a) => a + 1);
  };
  const startWorkspace = async () => {
    setStarting(true);
    try {
      await post(`/workspaces/${ref}/start`);
      reconnect();
    } catch (e) {
      setStatus({ kind: 'closed', message: e instanceof Error ? e.message : String(e), canStart: true });
    } finally {
      setStarting(false);
    }
  };
  const pressKey = (k: BarKey) => {
    const t = termRef.current;
    // Keep the soft keyboard where it was: the button never takes focus.
    sendRef.current(keySequence(k, t?.modes.applicationCursorKeysMode ?? false));
    t?.focus();
  };
  const toggleCtrl = () => {
    ctrlRef.current = !ctrlRef.current;
    setCtrl(ctrlRef.current);
    termRef.current?.focus();
  };

  return (
    <section aria-labelledby="term-title" className="terminal-page">
      <p className="crumbs">
        <a href="#/workspaces">Workspaces</a> / <a href={`#/workspaces/${ref}`}>{ws}</a> /
      </p>
      <div className="page-head">
        <h1 id="term-title">
          Terminal <span className="muted">· {session}</span>
        </h1>
        {readOnly && (
          <span className="badge" data-testid="terminal-read-only" title="viewers watch sessions; input is not sent">
            read-only
          </span>
        )}
        <span className={`badge ${status.kind === 'open' ? 'state-running' : status.kind === 'connecting' ? 'state-starting' : 'state-stopped'}`} data-testid="terminal-status" role="status">
          {status.kind === 'open' ? 'connected' : status.kind === 'connecting' ? 'connecting…' : status.kind === 'exited' ? `exited (${status.code})` : 'disconnected'}
        </span>
      </div>
      {status.kind === 'closed' && (
        <div className="error-box" role="alert" data-testid="terminal-error">
          <span>{status.message}</span>
          <span className="row">
            {status.canStart && canOperate && (
              <button type="button" className="btn small primary" disabled={starting} onClick={startWorkspace} data-testid="terminal-start-workspace">
                {starting ? 'Starting…' : 'Start workspace'}
              </button>
            )}
            <button type="button" className="btn small" onClick={reconnect}>
              Reconnect
            </button>
          </span>
        </div>
      )}
      <p className="muted small">Closing this page detaches; the session keeps running in the workspace.</p>
      <div className="terminal" ref={box} data-testid="terminal" aria-label={`Terminal for session ${session}`} />
      {showBar && (
        <div className="keybar" role="toolbar" aria-label="Terminal keys" data-testid="terminal-keybar">
          <button
            type="button"
            className={`btn small${ctrl ? ' primary' : ''}`}
            aria-pressed={ctrl}
            title="Ctrl: applies to the next key you type"
            onMouseDown={(e) => e.preventDefault()}
            onClick={toggleCtrl}
            data-testid="key-ctrl"
          >
            Ctrl
          </button>
          {BAR_KEYS.map((k) => (
            <button
              key={k.key}
              type="button"
              className="btn small"
              title={k.title}
              aria-label={k.title}
              onMouseDown={(e) => e.preventDefault()}
              onClick={() => pressKey(k.key)}
              data-testid={`key-${k.key}`}
            >
              {k.label}
            </button>
          ))}
        </div>
      )}
    </section>
  );
}
