import { useEffect, useRef, type ReactNode } from 'react';

export function Loading({ what = 'Loading' }: { what?: string }) {
  return (
    <p className="muted loading" role="status" aria-live="polite">
      {what}…
    </p>
  );
}

export function ErrorBox({ error, onRetry }: { error?: string; onRetry?: () => void }) {
  if (!error) return null;
  return (
    <div className="error-box" role="alert" data-testid="error">
      <span>{error}</span>
      {onRetry && (
        <button type="button" className="btn small" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="empty">{children}</p>;
}

/** A form's error, announced. */
export function FormError({ error }: { error?: string }) {
  if (!error) return null;
  return (
    <p className="error-box" role="alert">
      {error}
    </p>
  );
}

/** A value the server shows only this once (a token, a signing secret), with Copy and Done. */
export function ShownOnce({
  value,
  testid,
  valueTestid,
  onDone,
  children,
}: {
  value: string;
  testid: string;
  valueTestid: string;
  onDone: () => void;
  children: ReactNode;
}) {
  return (
    <div className="card" role="status" data-testid={testid}>
      <p>{children}</p>
      <code className="token-once" data-testid={valueTestid}>
        {value}
      </code>
      <div className="row">
        <button type="button" className="btn small" onClick={() => navigator.clipboard?.writeText(value)}>
          Copy
        </button>
        <button type="button" className="btn small" onClick={onDone}>
          Done
        </button>
      </div>
    </div>
  );
}

export function StateBadge({ state, testid }: { state: string; testid?: string }) {
  return (
    <span className={`badge state-${state}`} data-testid={testid} data-state={state}>
      {state}
    </span>
  );
}

/** A modal confirmation built on <dialog> (focus handling and Escape come with it). */
export function Dialog({
  open,
  title,
  children,
  onClose,
  testid,
}: {
  open: boolean;
  title: string;
  children: ReactNode;
  onClose: () => void;
  testid?: string;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} onClose={onClose} aria-labelledby="dialog-title" data-testid={testid}>
      <h2 id="dialog-title">{title}</h2>
      {children}
    </dialog>
  );
}
