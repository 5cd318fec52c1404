import { describe, expect, it } from 'vitest';
import { followSse, SseParser, type SseMessage } from './sse';

describe('SseParser', () => {
  it('parses id/event/data across arbitrary chunk boundaries', () => {
    const text = 'id: 1\nevent: status\ndata: {"a":1}\n\n: keep-alive\n\nid:2\r\nevent:message\r\ndata: line1\r\ndata: line2\r\n\r\n';
    for (let cut = 0; cut < text.length; cut++) {
      const p = new SseParser();
      const out = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))];
      expect(out).toEqual([
        { id: '1', event: 'status', data: '{"a":1}' },
        { id: '2', event: 'message', data: 'line1\nline2' },
      ]);
    }
  });
  it('ignores a message without data', () => {
    expect(new SseParser().push('event: x\n\n')).toEqual([]);
  });
});

function streamOf(chunks: string[], thenError = false): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < chunks.length) c.enqueue(enc.encode(chunks[i++]));
      else if (thenError) c.error(new Error('connection reset'));
      else c.close();
    },
  });
}
const ev = (seq: number) => `id: ${seq}\nevent: message\ndata: {"seq":${seq}}\n\n`;

describe('followSse', () => {
  it('resumes with after=<last seq>, sends the token, and never repeats a seq', async () => {
    const urls: string[] = [];
    const auth: string[] = [];
    let call = 0;
    const got: number[] = [];
    const fetchImpl = (async (url: string, init: RequestInit) => {
      urls.push(url);
      auth.push((init.headers as Record<string, string>).Authorization);
      call++;
      if (call === 1) return new Response(streamOf([ev(1), ev(2) + ev(3).slice(0, 5)], true), { status: 200 });
      // the server replays 2 and 3 (overlap) — they must be ignored except 3 which is new
      return new Response(streamOf([ev(2), ev(3), ev(4)]), { status: 200 });
    }) as unknown as typeof fetch;
    await new Promise<void>((resolve) => {
      const stop = followSse({
        url: (after) => `/s?after=${after}`,
        token: 'tok',
        fetchImpl,
        retryMs: 1,
        reconnectOnEnd: () => false,
        onMessage: (_m: SseMessage, seq) => {
          got.push(seq);
          if (seq === 4) {
            stop();
            resolve();
          }
        },
      });
    });
    expect(got).toEqual([1, 2, 3, 4]);
    expect(urls).toEqual(['/s?after=0', '/s?after=2']);
    expect(auth).toEqual(['Bearer tok', 'Bearer tok']);
  });
});
