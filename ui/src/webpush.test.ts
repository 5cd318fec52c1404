import { describe, expect, it } from 'vitest';
import { base64UrlToBytes, sameKey } from './webpush';

describe('web push keys', () => {
  it('decodes base64url with or without padding', () => {
    // RFC 8291 Appendix A's auth secret: 16 bytes.
    const auth = base64UrlToBytes('BTBZMqHH6r4Tts7J_aSIgg');
    expect(auth.length).toBe(16);
    expect(Array.from(auth.slice(0, 3))).toEqual([0x05, 0x30, 0x59]);
    expect(base64UrlToBytes('BTBZMqHH6r4Tts7J_aSIgg==')).toEqual(auth);
    const key = base64UrlToBytes('BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4');
    expect(key.length).toBe(65);
    expect(key[0]).toBe(4);
  });

  it('compares a subscription key with the server key', () => {
    const k = base64UrlToBytes('BTBZMqHH6r4Tts7J_aSIgg');
    expect(sameKey(k.slice().buffer, k)).toBe(true);
    const other = k.slice();
    other[15] ^= 1;
    expect(sameKey(other.buffer, k)).toBe(false);
    expect(sameKey(null, k)).toBe(false);
    expect(sameKey(new Uint8Array(3).buffer, k)).toBe(false);
  });
});
