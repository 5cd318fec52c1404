import { useCallback, useEffect, useRef, useState } from 'react';

/** The current hash route, e.g. `#/tasks/t_1` → `/tasks/t_1` (query part separated). */
export function useRoute(): { path: string; query: URLSearchParams } {
  const read = () => {
    const h = window.location.hash.replace(/^#/, '') || '/';
    const [path, q] = h.split('?');
    return { path: path || '/', query: new URLSearchParams(q || '') };
  };
  const [r, setR] = useState(read);
  useEffect(() => {
    const on = () => setR(read());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return r;
}

export function navigate(to: string) {
  window.location.hash = to.startsWith('#') ? to : `#${to}`;
}

export interface Loaded<T> {
  data: T | undefined;
  error: string | undefined;
  loading: boolean;
  reload: () => void;
}

/**
 * Loads with `fn`, and again every `intervalMs` when given (skipped while the tab is hidden).
 * Keeps the last good data on a refresh error.
 */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[], intervalMs?: number): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<string>();
  const [loading, setLoading] = useState(true);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  const gen = useRef(0);

  const run = useCallback(() => {
    const my = ++gen.current;
    fnRef.current().then(
      (d) => {
        if (my !== gen.current) return;
        setData(d);
        setError(undefined);
        setLoading(false);
      },
      (e: Error) => {
        if (my !== gen.current) return;
        setError(e.message);
        setLoading(false);
      },
    );
  }, []);

  useEffect(() => {
    setLoading(true);
    setData(undefined);
    setError(undefined);
    run();
    if (!intervalMs) return () => void gen.current++;
    const t = setInterval(() => {
      if (document.visibilityState !== 'hidden') run();
    }, intervalMs);
    return () => {
      clearInterval(t);
      gen.current++;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);

  return { data, error, loading, reload: run };
}

export interface Action {
  busy: boolean;
  error: string | undefined;
  /** Runs `fn`: `busy` meanwhile, and its error (cleared when it starts) kept for display. */
  run: (fn: () => Promise<void>) => Promise<void>;
}

/** The state of a user action (a form's submit, a row's button). */
export function useAction(): Action {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string>();
  const run = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(undefined);
    try {
      await fn();
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run };
}
