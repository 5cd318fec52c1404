import { describe, expect, it } from 'vitest';
import { accessDecisionBody, accessPath, accessTarget } from './access';

describe('access requests', () => {
  it('names what is asked for', () => {
    expect(accessTarget({ kind: 'egress', host: 'pypi.org', port: 443 })).toBe('pypi.org:443');
    expect(accessTarget({ kind: 'egress', host: 'fd00::1', port: 8080 })).toBe('[fd00::1]:8080');
    expect(accessTarget({ kind: 'secret', host: 'github.com', secret: 'GH_TOKEN' })).toBe('secret GH_TOKEN for github.com');
  });

  it('builds decision bodies', () => {
    expect(accessDecisionBody({ kind: 'egress' }, 'approve')).toEqual({ decision: 'approve', scope: 'once' });
    expect(accessDecisionBody({ kind: 'egress' }, 'approve', { scope: 'once', ttlSeconds: 600, reason: ' ok ' })).toEqual({
      decision: 'approve',
      scope: 'once',
      ttl_seconds: 600,
      reason: 'ok',
    });
    expect(accessDecisionBody({ kind: 'egress' }, 'approve', { scope: 'always', ttlSeconds: 600 })).toEqual({ decision: 'approve', scope: 'always' });
    expect(accessDecisionBody({ kind: 'secret' }, 'approve', { scope: 'once' })).toEqual({ decision: 'approve', scope: 'always' });
    expect(accessDecisionBody({ kind: 'egress' }, 'deny', { scope: 'always', reason: '' })).toEqual({ decision: 'deny' });
  });

  it('puts workspace and id in one segment each', () => {
    expect(accessPath({ workspace: 'acme/web', id: 'ar_1' })).toBe('/workspaces/acme%2Fweb/access-requests/ar_1');
  });
});
