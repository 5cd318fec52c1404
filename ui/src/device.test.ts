import { describe, expect, it } from 'vitest';
import { DEVICE_KEY, getToken, isRememberedDevice, setToken, TOKEN_KEY } from './api';

function memory() {
  const m = new Map<string, string>();
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
    keys: () => [...m.keys()],
  };
}

describe('where the UI keeps its token', () => {
  it('keeps a pasted token in the tab only', () => {
    const stores = { session: memory(), local: memory() };
    setToken('pasted', false, stores);
    expect(getToken(stores)).toBe('pasted');
    expect(stores.local.keys()).toEqual([]);
    expect(isRememberedDevice(stores)).toBe(false);
  });
  it('keeps a device token for every tab, and forgets both on sign-out', () => {
    const stores = { session: memory(), local: memory() };
    setToken('pasted', false, stores);
    setToken('device-token', true, stores);
    expect(stores.session.getItem(TOKEN_KEY)).toBeNull();
    expect(stores.local.getItem(DEVICE_KEY)).toBe('device-token');
    // a new tab: empty session storage, same local storage
    const newTab = { session: memory(), local: stores.local };
    expect(getToken(newTab)).toBe('device-token');
    expect(isRememberedDevice(newTab)).toBe(true);
    setToken(null, false, newTab);
    expect(getToken(newTab)).toBeNull();
    expect(getToken({ session: memory(), local: stores.local })).toBeNull();
  });
});
