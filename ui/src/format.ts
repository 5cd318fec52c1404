export function bytes(n: number | undefined): string {
  if (n === undefined || n === null || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

export function age(iso: string | undefined, now = Date.now()): string {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return iso;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

export function dateTime(iso: string | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export const num = (n: number | null | undefined) => (n === undefined || n === null ? '—' : n.toLocaleString('en-US'));
/** An exact decimal amount from the API (`cost`, e.g. "0.00056"), flagged when some calls
 *  were priced at the fallback price (no price table lists their model). */
export const usdExact = (cost: string | undefined, fallbackCalls?: number) =>
  cost ? `$${cost}${fallbackCalls ? ` (${fallbackCalls} at fallback price)` : ''}` : '—';
export const usd = (n: number | null | undefined) => (n === undefined || n === null ? '—' : `$${n.toFixed(n < 1 ? 4 : 2)}`);

/** `url` when it is an http(s) address a link may point at, else undefined (a `javascript:` or
 * other URL stored from a third party's answer is shown as text, never as a link). */
export function httpUrl(url: string | undefined): string | undefined {
  if (!url) return undefined;
  try {
    const u = new URL(url);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : undefined;
  } catch {
    return undefined;
  }
}
