import { describe, expect, it } from 'vitest';
import { attachProblem, BAR_KEYS, keySequence, wantsKeyBar, withCtrl } from './keys';

describe('terminal key bar', () => {
  it('sends the bytes a terminal sends', () => {
    expect(keySequence('esc', false)).toBe('\x1b');
    expect(keySequence('tab', false)).toBe('\t');
    expect(keySequence('ctrl-c', true)).toBe('\x03');
    expect(['up', 'down', 'right', 'left'].map((k) => keySequence(k as never, false))).toEqual(['\x1b[A', '\x1b[B', '\x1b[C', '\x1b[D']);
    expect(keySequence('up', true)).toBe('\x1bOA');
    expect(BAR_KEYS.map((k) => k.key)).toContain('ctrl-c');
  });
  it('applies a latched Ctrl to one typed key only', () => {
    expect(withCtrl('c')).toBe('\x03');
    expect(withCtrl('C')).toBe('\x03');
    expect(withCtrl('a')).toBe('\x01');
    expect(withCtrl('[')).toBe('\x1b');
    expect(withCtrl(' ')).toBe('\x00');
    expect(withCtrl('1')).toBe('1');
    expect(withCtrl('ls')).toBe('ls');
    expect(withCtrl('\x1b[A')).toBe('\x1b[A');
  });
  it('shows on touch screens and phone widths', () => {
    const mm = (coarse: boolean, narrow: boolean) => (q: string) => ({ matches: q.includes('coarse') ? coarse : narrow });
    expect(wantsKeyBar(mm(true, false))).toBe(true);
    expect(wantsKeyBar(mm(false, true))).toBe(true);
    expect(wantsKeyBar(mm(false, false))).toBe(false);
  });
});

describe('attach problems', () => {
  it('says what is wrong instead of a close code', () => {
    expect(attachProblem(null, null, 's', 'x').message).toMatch(/^Workspace not found/);
    expect(attachProblem({ state: 'stopped' }, null, 's', 'x')).toEqual({ message: 'Workspace is stopped: terminals need a running workspace.', canStart: true });
    expect(attachProblem({ state: 'starting' }, null, 's', 'x').canStart).toBe(false);
    expect(attachProblem({ state: 'running' }, [{ name: 'a' }], 's', 'x').message).toMatch(/Session “s” not found/);
    expect(attachProblem({ state: 'running' }, [{ name: 's' }], 's', 'disconnected (code 1006)').message).toBe('disconnected (code 1006)');
  });
});
