import { afterEach, describe, expect, it } from 'vitest';
import { acceptSession, authHeaders, getCsrfToken, isStateChanging, setCsrfToken, signInOptions, wsProtocols } from './auth';

afterEach(() => setCsrfToken(null));

describe('signInOptions', () => {
  it('offers SSO when the server has it, and the token form as well', () => {
    expect(signInOptions({ sso: true, login_url: '/auth/oidc/login', token: true })).toEqual({
      sso: { loginUrl: '/auth/oidc/login' },
      token: true,
    });
  });
  it('offers only the token form without SSO', () => {
    expect(signInOptions({ sso: false, token: true })).toEqual({ sso: null, token: true });
  });
  it('falls back to the token form when the config is unknown', () => {
    expect(signInOptions(null)).toEqual({ sso: null, token: true });
    expect(signInOptions(undefined)).toEqual({ sso: null, token: true });
  });
  it('never offers nothing', () => {
    expect(signInOptions({ sso: false, token: false })).toEqual({ sso: null, token: true });
    expect(signInOptions({ sso: true, token: false })).toEqual({ sso: { loginUrl: '/auth/oidc/login' }, token: false });
  });
});

describe('authHeaders', () => {
  it('sends the bearer token and no CSRF header with a token', () => {
    const h = new Headers();
    authHeaders(h, 'POST', 'tok', 'csrf');
    expect(h.get('Authorization')).toBe('Bearer tok');
    expect(h.get('X-CSRF-Token')).toBeNull();
  });
  it('sends the CSRF token on state-changing requests of a cookie session only', () => {
    for (const m of ['POST', 'put', 'DELETE', 'PATCH']) {
      const h = new Headers();
      authHeaders(h, m, null, 'c1');
      expect(h.get('X-CSRF-Token')).toBe('c1');
      expect(h.get('Authorization')).toBeNull();
    }
    for (const m of [undefined, 'GET', 'HEAD', 'OPTIONS']) {
      const h = new Headers();
      authHeaders(h, m, null, 'c1');
      expect(h.get('X-CSRF-Token')).toBeNull();
    }
  });
  it('uses the CSRF token of the accepted session, and forgets it for tokens', () => {
    acceptSession({ kind: 'session', name: 'Alice', role: 'member', csrf_token: 'c2' });
    expect(getCsrfToken()).toBe('c2');
    const h = new Headers();
    authHeaders(h, 'POST', null);
    expect(h.get('X-CSRF-Token')).toBe('c2');
    acceptSession({ kind: 'token', name: 'bootstrap-admin', role: 'admin' });
    expect(getCsrfToken()).toBeNull();
  });
});

describe('helpers', () => {
  it('knows which methods change state', () => {
    expect(isStateChanging('GET')).toBe(false);
    expect(isStateChanging(undefined)).toBe(false);
    expect(isStateChanging('post')).toBe(true);
  });
  it('offers the bearer subprotocol only with a token', () => {
    expect(wsProtocols('t')).toEqual(['berth.bearer', 't']);
    expect(wsProtocols(null)).toBeUndefined();
  });
});
