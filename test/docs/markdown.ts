// Reading the project's Markdown documents in tests, so that a test checks what the
// document says against the code instead of keeping a copy of it.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repository root (test/docs/ is two levels down). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

export function readDoc(relativePath: string): string {
  return readFileSync(new URL(relativePath, new URL('../../', import.meta.url)), 'utf8');
}

export interface Table {
  readonly header: readonly string[];
  /** Cells trimmed; one array per row, as long as the header. */
  readonly rows: readonly (readonly string[])[];
}

/** The cells of a Markdown table row (`| a | b |`); a `\|` inside a cell stays a `|`. */
function cells(line: string): string[] {
  const inner = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return inner.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** The table that follows the comment `<!-- marker -->`; throws naming the marker when there is none. */
export function tableAfter(text: string, marker: string): Table {
  const at = text.indexOf(`<!-- ${marker} -->`);
  if (at < 0) throw new Error(`no <!-- ${marker} --> in the document`);
  const lines = text.slice(at).split('\n').slice(1);
  const tableLines: string[] = [];
  for (const line of lines) {
    if (!line.trim().startsWith('|')) break;
    tableLines.push(line);
  }
  if (tableLines.length < 2) throw new Error(`<!-- ${marker} --> is not followed by a table`);
  const header = cells(tableLines[0]);
  const rows = tableLines.slice(2).map(cells);
  for (const row of rows) {
    if (row.length !== header.length) throw new Error(`<!-- ${marker} -->: row "${row.join(' | ')}" has ${row.length} cells`);
  }
  return { header, rows };
}

export interface FencedBlock {
  /** The whole info string after the opening fence, e.g. `json sparse-tensor-input`. */
  readonly info: string;
  readonly body: string;
}

/** Every fenced code block (```), in document order. */
export function fencedBlocks(text: string): FencedBlock[] {
  const blocks: FencedBlock[] = [];
  const re = /^```([^\n]*)\n([\s\S]*?)^```\s*$/gm;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) blocks.push({ info: m[1].trim(), body: m[2] });
  return blocks;
}

/** The one fenced block whose info string has `tag` as a word; throws when there is not exactly one. */
export function blockTagged(text: string, tag: string): FencedBlock {
  const found = fencedBlocks(text).filter((b) => b.info.split(/\s+/).includes(tag));
  if (found.length !== 1) throw new Error(`expected one code block tagged ${tag}, found ${found.length}`);
  return found[0];
}

/** The texts between backticks in a cell or a line. */
export function backticked(text: string): string[] {
  return [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
}

/** A cell's text without surrounding backticks. */
export function plain(cell: string): string {
  return cell.replace(/^`(.*)`$/, '$1');
}

/** Hex bytes ("0a 1f ...") as bytes. */
export function hexBytes(text: string): Uint8Array {
  const tokens = text.trim() === '' ? [] : text.trim().split(/\s+/);
  for (const t of tokens) if (!/^[0-9a-f]{2}$/.test(t)) throw new Error(`not a hex byte: '${t}'`);
  return Uint8Array.from(tokens.map((t) => parseInt(t, 16)));
}

/** Bytes as "0a 1f ..." for readable failures. */
export function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join(' ');
}

/** The text outside fenced code blocks, where inline `code` spans can be paired up. */
export function prose(text: string): string {
  return text.replace(/^```[^\n]*\n[\s\S]*?^```\s*$/gm, '');
}

/** Repository paths the document names in backticks (`proto/codec.ts`, `client/data/`), outside code blocks. */
export function namedPaths(text: string, roots: readonly string[]): string[] {
  const found = new Set<string>();
  for (const quoted of backticked(prose(text))) {
    const path = quoted.trim();
    if (/\s/.test(path) || path.includes('*') || path.includes('<')) continue;
    if (roots.some((root) => path.startsWith(`${root}/`) || path === root)) found.add(path);
  }
  return [...found];
}
