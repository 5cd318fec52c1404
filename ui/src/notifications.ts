// Browser notifications: while a berth tab is open and the switch on the Notifications page is
// on (remembered in this browser), the tenant's notification events
// (GET /api/v1/notifications/stream, SSE) are shown with the Notifications API.

import { useEffect, useState } from 'react';
import type { NotificationEvent } from './api';
import { getToken } from './api';
import { followSse } from './sse';

const KEY = 'berth.browserNotifications';
const CHANGED = 'berth-browser-notifications';

export function browserNotificationsSupported(): boolean {
  return typeof window !== 'undefined' && 'Notification' in window;
}

export function browserNotificationsOn(): boolean {
  try {
    return localStorage.getItem(KEY) === '1' && browserNotificationsSupported() && Notification.permission === 'granted';
  } catch {
    return false;
  }
}

/** Switches them on (asking the browser's permission first) or off; returns the new state. */
export async function setBrowserNotifications(on: boolean): Promise<boolean> {
  if (on) {
    if (!browserNotificationsSupported()) return false;
    const p = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
    if (p !== 'granted') return false;
  }
  try {
    if (on) localStorage.setItem(KEY, '1');
    else localStorage.removeItem(KEY);
  } catch {
    /* storage unavailable: the switch lasts this page only */
  }
  window.dispatchEvent(new Event(CHANGED));
  return on;
}

/** What a browser notification of an event says. */
export function describeEvent(e: NotificationEvent): { title: string; body: string; href?: string } {
  const href = e.task ? `#/tasks/${encodeURIComponent(e.task.id)}` : e.workspace ? `#/workspaces/${encodeURIComponent(e.workspace)}` : undefined;
  return { title: `berth: ${e.title}`, body: e.text, href };
}

/** Follows the stream while the switch is on; used once, by the app shell. */
export function useBrowserNotifications() {
  const [on, setOn] = useState(browserNotificationsOn);
  useEffect(() => {
    const update = () => setOn(browserNotificationsOn());
    window.addEventListener(CHANGED, update);
    return () => window.removeEventListener(CHANGED, update);
  }, []);
  useEffect(() => {
    if (!on) return;
    return followSse({
      // No cursor at first: from now on; after a drop, from the last event seen.
      url: (after) => `/api/v1/notifications/stream${after > 0 ? `?after=${after}` : ''}`,
      token: getToken(),
      reconnectOnEnd: () => true,
      onMessage: (msg) => {
        try {
          const d = describeEvent(JSON.parse(msg.data) as NotificationEvent);
          const n = new Notification(d.title, { body: d.body, tag: msg.id });
          if (d.href) {
            n.onclick = () => {
              window.focus();
              window.location.hash = d.href!.slice(1);
            };
          }
        } catch {
          /* a malformed event is skipped */
        }
      },
    });
  }, [on]);
}
