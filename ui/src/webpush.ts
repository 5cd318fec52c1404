// Web Push for this browser: registers berth's service worker (/sw.js), subscribes with the
// server's VAPID key (GET /api/v1/notifications/webpush) and gives the endpoint and keys that a
// `webpush` subscription is created with. Push needs a secure context (HTTPS, or localhost).

import { api, type WebPushInfo } from './api';

export function webPushSupported(): boolean {
  return (
    typeof window !== 'undefined' &&
    window.isSecureContext &&
    typeof navigator !== 'undefined' &&
    'serviceWorker' in navigator &&
    'PushManager' in window &&
    'Notification' in window
  );
}

/** Base64url (padding optional) to bytes, as `applicationServerKey` takes them. */
export function base64UrlToBytes(s: string): Uint8Array {
  const b64 = s.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Whether a subscription's `applicationServerKey` is this key. */
export function sameKey(a: ArrayBuffer | null | undefined, b: Uint8Array): boolean {
  if (!a) return false;
  const x = new Uint8Array(a);
  return x.length === b.length && x.every((v, i) => v === b[i]);
}

export type PushTarget = { url: string; keys: { p256dh: string; auth: string } };

/** Subscribes this browser to push from this berth server (once; a changed server key makes a
 *  new subscription) and returns what the API needs. Throws a readable error otherwise. */
export async function subscribeThisBrowser(): Promise<PushTarget> {
  if (!webPushSupported()) {
    throw new Error('This browser cannot receive push messages from this page (it needs HTTPS or localhost, and service workers).');
  }
  const permission = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  if (permission !== 'granted') throw new Error('The browser did not allow notifications for this site.');
  const info = await api<WebPushInfo>('/notifications/webpush');
  const key = base64UrlToBytes(info.public_key);
  await navigator.serviceWorker.register('/sw.js');
  const reg = await navigator.serviceWorker.ready;
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameKey(sub.options.applicationServerKey, key)) {
    await sub.unsubscribe();
    sub = null;
  }
  sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key as BufferSource });
  const j = sub.toJSON();
  if (!j.endpoint || !j.keys?.p256dh || !j.keys?.auth) throw new Error('The browser gave no push subscription keys.');
  return { url: j.endpoint, keys: { p256dh: j.keys.p256dh, auth: j.keys.auth } };
}
