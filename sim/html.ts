/**
 * The pieces of every report page (the run's report.html, the seeds and sweep
 * reports): an offline HTML page (no network) with the shared style, escaping,
 * tables, the algorithms' colours, a config as rows, and a dot plot of means
 * with their 95% confidence intervals drawn as inline SVG.
 */
import type { Spread } from './stats.js';

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A whole page: the shared style (and the page's own `style`), the title as its heading, then `body`. */
export function htmlPage(title: string, body: string, style = ''): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th { font-weight: 600; vertical-align: bottom; background: #f4f4f4; } td { white-space: nowrap; } .scroll { overflow-x: auto; }
td:first-child, th:first-child, td.text, th.text { text-align: left; } section { margin: 2em 0; }
h2 { font-size: 1.2em; margin-bottom: 0.3em; } code { font-size: 0.95em; }
${style}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

/** A table of text cells (escaped); a column listed in `textColumns` is left-aligned. */
export function htmlTable(header: readonly string[], rows: readonly (readonly string[])[], textColumns = 1): string {
  const cell = (tag: 'td' | 'th', text: string, i: number): string =>
    `<${tag}${i < textColumns ? ' class="text"' : ''}>${escapeHtml(text)}</${tag}>`;
  return (
    `<div class="scroll"><table><thead><tr>${header.map((h, i) => cell('th', h, i)).join('')}</tr></thead>\n<tbody>\n` +
    rows.map((r) => `<tr>${r.map((c, i) => cell('td', c, i)).join('')}</tr>`).join('\n') +
    '\n</tbody></table></div>'
  );
}

/** A config (any JSON) as [dotted field path, value] rows, for a table: a list of plain values reads `1, 2`. */
export function configRows(value: unknown, prefix = ''): [string, string][] {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0) return prefix ? [[prefix, '{}']] : [];
    return entries.flatMap(([k, v]) => configRows(v, prefix ? `${prefix}.${k}` : k));
  }
  if (Array.isArray(value) && value.every((v) => v === null || typeof v !== 'object')) {
    return [[prefix, value.map(String).join(', ')]];
  }
  return [[prefix, typeof value === 'string' ? value : JSON.stringify(value)]];
}

export interface IntervalRow {
  readonly label: string;
  readonly color: string;
  readonly spread: Spread;
}

/** The algorithms' colours, Tableau 10: distinct for the usual handful, and readable by most colour-blind readers. */
export const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#e15759',
  '#76b7b2',
  '#59a14f',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
];

/**
 * One row per entry: a dot at the mean and a bar over its 95% confidence
 * interval (none for a single seed), on a shared axis; `scale` turns a value
 * into what the axis shows (x100 for percent).
 */
export function intervalPlot(title: string, rows: readonly IntervalRow[], scale = 1): string {
  if (rows.length === 0) return '';
  const rowHeight = 22;
  const labelWidth = 420;
  const plotWidth = 600;
  const top = 28;
  const height = top + rows.length * rowHeight + 30;
  const ends = rows.flatMap((r) =>
    [r.spread.ci95?.low ?? r.spread.mean, r.spread.ci95?.high ?? r.spread.mean].map((v) => v * scale),
  );
  let low = Math.min(...ends);
  let high = Math.max(...ends);
  if (high - low < 1e-9) {
    low -= 1;
    high += 1;
  }
  const pad = (high - low) * 0.05;
  low -= pad;
  high += pad;
  const x = (v: number): number => labelWidth + ((v * scale - low) / (high - low)) * plotWidth;
  const ticks = Array.from({ length: 5 }, (_, i) => low + ((high - low) * i) / 4);
  // As many decimals as a quarter of the axis needs.
  const decimals = Math.min(6, Math.max(0, Math.ceil(-Math.log10((high - low) / 4)) + 1));
  const parts = [
    `<text x="0" y="16" font-weight="bold">${escapeHtml(title)}</text>`,
    ...ticks.map((t) => {
      const tx = labelWidth + ((t - low) / (high - low)) * plotWidth;
      return (
        `<line x1="${tx.toFixed(1)}" y1="${top}" x2="${tx.toFixed(1)}" y2="${height - 24}" stroke="#eee"/>` +
        `<text x="${tx.toFixed(1)}" y="${height - 8}" text-anchor="middle" font-size="11">${t.toFixed(decimals)}</text>`
      );
    }),
    ...rows.map((r, i) => {
      const y = top + i * rowHeight + rowHeight / 2;
      const bar =
        r.spread.ci95 === null
          ? ''
          : `<line x1="${x(r.spread.ci95.low).toFixed(1)}" y1="${y}" x2="${x(r.spread.ci95.high).toFixed(1)}" y2="${y}" stroke="${r.color}" stroke-width="3"/>`;
      return (
        `<text x="${labelWidth - 8}" y="${y + 4}" text-anchor="end" font-size="12">${escapeHtml(r.label)}</text>${bar}` +
        `<circle cx="${x(r.spread.mean).toFixed(1)}" cy="${y}" r="5" fill="${r.color}"/>`
      );
    }),
  ];
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${labelWidth + plotWidth + 20}" height="${height}" font-family="system-ui, sans-serif">${parts.join('')}</svg>`;
}
