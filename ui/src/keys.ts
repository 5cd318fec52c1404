// The terminal's key bar for touch devices: keys a soft keyboard lacks (Esc, Tab, arrows, Ctrl
// combinations), as the bytes a terminal sends for them.

export type BarKey = 'esc' | 'tab' | 'up' | 'down' | 'right' | 'left' | 'ctrl-c';

export const BAR_KEYS: { key: BarKey; label: string; title: string }[] = [
  { key: 'esc', label: 'Esc', title: 'Escape' },
  { key: 'tab', label: 'Tab', title: 'Tab' },
  { key: 'left', label: '←', title: 'Left arrow' },
  { key: 'up', label: '↑', title: 'Up arrow' },
  { key: 'down', label: '↓', title: 'Down arrow' },
  { key: 'right', label: '→', title: 'Right arrow' },
  { key: 'ctrl-c', label: '^C', title: 'Ctrl-C (interrupt)' },
];

/**
 * The bytes for one bar key. Arrows follow the terminal's cursor-key mode: `ESC O x` when the
 * program asked for application cursor keys (vim, most TUIs), `ESC [ x` otherwise.
 */
export function keySequence(key: BarKey, applicationCursor: boolean): string {
  const arrow = (c: string) => (applicationCursor ? `\x1bO${c}` : `\x1b[${c}`);
  switch (key) {
    case 'esc':
      return '\x1b';
    case 'tab':
      return '\t';
    case 'up':
      return arrow('A');
    case 'down':
      return arrow('B');
    case 'right':
      return arrow('C');
    case 'left':
      return arrow('D');
    case 'ctrl-c':
      return '\x03';
  }
}

/**
 * Applies a latched Ctrl to typed input: a single letter or one of `@[\]^_ ` becomes its control
 * byte (Ctrl-A = 0x01 … Ctrl-Z = 0x1a, Ctrl-[ = Esc, Ctrl-Space = NUL). Anything else (a pasted
 * string, an escape sequence) passes unchanged, and the latch is spent either way.
 */
export function withCtrl(data: string): string {
  if (data.length !== 1) return data;
  const c = data.toUpperCase().charCodeAt(0);
  if (c >= 0x40 && c <= 0x5f) return String.fromCharCode(c & 0x1f);
  if (data === ' ') return '\x00';
  if (data === '?') return '\x7f';
  return data;
}

/** Whether to show the key bar: a touch screen (coarse pointer) or a phone-width window. */
export function wantsKeyBar(matchMedia: (q: string) => { matches: boolean } = window.matchMedia.bind(window)): boolean {
  return matchMedia('(pointer: coarse)').matches || matchMedia('(max-width: 759px)').matches;
}

/** Why a terminal could not attach, in words (a failed WebSocket upgrade only says 1006). */
export type AttachProblem = { message: string; canStart: boolean };

/**
 * Diagnoses a terminal that closed before it ever opened, from what the REST API says about the
 * workspace and its sessions (`workspace` null = 404, `sessions` null = not listed).
 */
export function attachProblem(
  workspace: { state: string } | null,
  sessions: { name: string }[] | null,
  session: string,
  fallback: string,
): AttachProblem {
  if (!workspace) return { message: 'Workspace not found: it was removed, or you cannot see it.', canStart: false };
  if (workspace.state !== 'running') {
    const stopped = workspace.state === 'stopped' || workspace.state === 'failed';
    return { message: `Workspace is ${workspace.state}: terminals need a running workspace.`, canStart: stopped };
  }
  if (sessions && !sessions.some((s) => s.name === session)) {
    return { message: `Session “${session}” not found in this workspace (it ended, or was never created).`, canStart: false };
  }
  return { message: fallback, canStart: false };
}
