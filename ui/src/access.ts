// Access requests: what a workspace was denied or asked for (egress to a host, a secret for a
// host), how one reads in a line, and the body of a decision.

import type { AccessRequest } from './api';

export type AccessScope = 'once' | 'always';

/** What is asked for, in one line: `host:port` (IPv6 in brackets) or `secret NAME for host`. */
export function accessTarget(r: Pick<AccessRequest, 'kind' | 'host' | 'port' | 'secret'>): string {
  if (r.kind === 'secret') return `secret ${r.secret ?? '?'} for ${r.host}`;
  const host = r.host.includes(':') ? `[${r.host}]` : r.host;
  return r.port ? `${host}:${r.port}` : host;
}

/** The body of `POST /workspaces/{ws}/access-requests/{req}`. A secret request is approved
 * `always` (the secret is bound to the host); `ttlSeconds` goes with `once` only; an empty reason
 * is left out. */
export function accessDecisionBody(
  r: Pick<AccessRequest, 'kind'>,
  decision: 'approve' | 'deny',
  opts: { scope?: AccessScope; ttlSeconds?: number; reason?: string } = {},
) {
  const body: { decision: 'approve' | 'deny'; scope?: AccessScope; ttl_seconds?: number; reason?: string } = { decision };
  if (decision === 'approve') {
    const scope = r.kind === 'secret' ? 'always' : (opts.scope ?? 'once');
    body.scope = scope;
    if (scope === 'once' && opts.ttlSeconds) body.ttl_seconds = opts.ttlSeconds;
  }
  const reason = opts.reason?.trim();
  if (reason) body.reason = reason;
  return body;
}

/** The API path deciding `r` (workspace and id, each one path segment). */
export function accessPath(r: Pick<AccessRequest, 'workspace' | 'id'>): string {
  return `/workspaces/${encodeURIComponent(r.workspace)}/access-requests/${encodeURIComponent(r.id)}`;
}

/** The badge class of a request's state. */
export function accessStateClass(state: string): string {
  switch (state) {
    case 'open':
      return 'state-waiting';
    case 'approved':
      return 'state-completed';
    case 'denied':
      return 'state-failed';
    default:
      return 'state-cancelled';
  }
}
