// berth's service worker: shows the Web Push messages berth sends to this browser (a
// subscription made on the Notifications page) while no berth tab is open, and opens berth on a
// click. The message is JSON: {title, body, kind, id, url}.

self.addEventListener('push', (event) => {
  let m = {};
  try {
    m = event.data ? event.data.json() : {};
  } catch {
    m = { body: event.data ? event.data.text() : '' };
  }
  const title = `berth: ${m.title || 'notification'}`;
  event.waitUntil(
    self.registration.showNotification(title, {
      body: m.body || '',
      tag: m.id ? `berth-${m.id}` : undefined,
      data: { url: m.url || '/' },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  // Only berth's own pages: a link to another origin opens berth's start page instead.
  let target = new URL('/', self.location.origin);
  try {
    const u = new URL((event.notification.data && event.notification.data.url) || '/', self.location.origin);
    if (u.origin === self.location.origin) target = u;
  } catch {
    /* keep the start page */
  }
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((windows) => {
      for (const w of windows) {
        if ('focus' in w && 'navigate' in w) return w.navigate(target.href).then((c) => (c || w).focus());
      }
      return self.clients.openWindow(target.href);
    }),
  );
});
