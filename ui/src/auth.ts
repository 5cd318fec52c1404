// How the UI is signed in: with a bearer token (kept in sessionStorage, sent as
// `Authorization`) or with a browser session of single sign-on (an HttpOnly cookie the browser
// sends by itself; state-changing requests add the session's CSRF token in `X-CSRF-Token`).
// Pure logic, unit-tested; App.tsx wires it to the pages.

import type { components } from './api-schema';

export type AuthConfig = components['schemas']['AuthConfig'];
export type SessionInfo = components['schemas']['SessionInfo'];

/** What the sign-in page offers. */
export interface SignInOptions {
  /** "Sign in with SSO" (a link to the provider's login). */
  sso: { loginUrl: string } | null;
  /** The token form. */
  token: boolean;
}

/** The sign-in page's choices from `GET /api/v1/auth/config`; without an answer (an older or
 * unreachable server) the token form only. */
export function signInOptions(config: AuthConfig | null | undefined): SignInOptions {
  if (!config) return { sso: null, token: true };
  const sso = config.sso ? { loginUrl: config.login_url || '/auth/oidc/login' } : null;
  // Never offer nothing: a server that says neither still takes tokens.
  return { sso, token: config.token || !sso };
}

let csrf: string | null = null;

/** Remembers the CSRF token of the current browser session (null: none / signed out). */
export function setCsrfToken(t: string | null) {
  csrf = t;
}

export function getCsrfToken(): string | null {
  return csrf;
}

/** Whether a request of this method changes state (and so needs the CSRF header). */
export function isStateChanging(method: string | undefined): boolean {
  const m = (method || 'GET').toUpperCase();
  return !(m === 'GET' || m === 'HEAD' || m === 'OPTIONS');
}

/** Authentication headers for a request: the bearer token when there is one, else the CSRF
 * token on state-changing requests of a cookie session. */
export function authHeaders(headers: Headers, method: string | undefined, token: string | null, csrfToken: string | null = csrf) {
  if (token) headers.set('Authorization', `Bearer ${token}`);
  else if (csrfToken && isStateChanging(method)) headers.set('X-CSRF-Token', csrfToken);
}

/** A session answer as the UI keeps it: cookie sessions carry their CSRF token. */
export function acceptSession(info: SessionInfo): SessionInfo {
  setCsrfToken(info.kind === 'session' ? (info.csrf_token ?? null) : null);
  return info;
}

/** The WebSocket subprotocols to offer: the bearer token when signed in with one; with a cookie
 * session none (the browser sends the cookie, the server checks Origin). */
export function wsProtocols(token: string | null): string[] | undefined {
  return token ? ['berth.bearer', token] : undefined;
}
