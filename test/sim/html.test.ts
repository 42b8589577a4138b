import { describe, expect, it } from 'vitest';
import { configRows, escapeHtml, htmlTable } from '../../sim/html.js';

describe('report HTML pieces', () => {
  it('flattens a config into dotted rows', () => {
    expect(configRows({ a: 1, b: { c: 'x', d: [1, 2] }, e: {}, f: null, g: [{ h: 1 }], i: true })).toEqual([
      ['a', '1'],
      ['b.c', 'x'],
      ['b.d', '1, 2'],
      ['e', '{}'],
      ['f', 'null'],
      ['g', '[{"h":1}]'],
      ['i', 'true'],
    ]);
  });

  it('escapes text for HTML, in table cells too', () => {
    expect(escapeHtml(`<b a="1">&'`)).toBe('&#60;b a=&#34;1&#34;&#62;&#38;&#39;');
    expect(htmlTable(['x'], [['</td><script>']])).toContain('<td class="text">&#60;/td&#62;&#60;script&#62;</td>');
  });
});
