import { describe, expect, it } from 'vitest';
import { httpUrl } from './format';

describe('httpUrl', () => {
  it('keeps http and https addresses', () => {
    expect(httpUrl('https://github.com/acme/web/pull/7')).toBe('https://github.com/acme/web/pull/7');
    expect(httpUrl('http://git.test:8443/x')).toBe('http://git.test:8443/x');
  });
  it('refuses anything a link must not point at', () => {
    for (const bad of ['javascript:alert(1)', 'JavaScript:alert(1)', 'data:text/html,x', ' ', 'not a url', undefined]) {
      expect(httpUrl(bad)).toBeUndefined();
    }
  });
});
