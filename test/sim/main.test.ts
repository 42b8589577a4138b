/**
 * `subfed sim` as the command runs it (runSimCommand): the log goes through
 * pino, and `--dashboard` serves the coordinator's live page while the
 * simulation runs, its event stream following every committed round.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runSimCommand, type SimCommandFlags } from '../../sim/main.js';
import { memoryLogger } from '../server/harness.js';

const dir = mkdtempSync(path.join(tmpdir(), 'subfed-sim-main-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const tiny: SimCommandFlags = {
  dataset: 'synthetic',
  algorithm: 'fedavg',
  clients: '4',
  rounds: '2',
  fraction: '0.5',
  epochs: '1',
  evalEvery: '2',
  workers: '1',
  seeds: '3',
};

interface ServerSentEvent {
  event: string;
  data: { kind: string; snapshot?: { title: string }; round?: { round: number; members: number } };
}

/** Reads a text/event-stream until the server ends it. */
async function readEvents(url: string, into: ServerSentEvent[]): Promise<void> {
  const res = await fetch(url, { headers: { accept: 'text/event-stream' } });
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const decoder = new TextDecoder();
  let buffered = '';
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    buffered += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const field = (name: string) =>
        block
          .split('\n')
          .filter((l) => l.startsWith(`${name}:`))
          .map((l) => l.slice(name.length + 1).trim())
          .join('\n');
      if (field('data') !== '') into.push({ event: field('event'), data: JSON.parse(field('data')) as ServerSentEvent['data'] });
    }
  }
}

describe('subfed sim (runSimCommand)', () => {
  it('serves the live dashboard during the run and logs each round through pino', async () => {
    const log = memoryLogger();
    const events: ServerSentEvent[] = [];
    let reading: Promise<void> | undefined;
    let page: Promise<string> | undefined;
    const code = await runSimCommand(
      { ...tiny, out: path.join(dir, 'run'), dashboard: '0' },
      {
        logger: log.logger,
        onDashboard: (address) => {
          reading = readEvents(`http://${address}/api/events`, events);
          page = fetch(`http://${address}/`).then((r) => r.text());
        },
      },
    );
    expect(code).toBe(0);
    expect(reading).toBeDefined();
    await reading; // the stream ends when the run closes its dashboard
    expect(await page).toMatch(/<canvas id="chart-accuracy">/);

    const snapshots = events.filter((e) => e.event === 'snapshot').map((e) => e.data.snapshot?.title);
    expect(snapshots).toContain('simulation · fedavg');
    const rounds = events.filter((e) => e.event === 'round').map((e) => e.data.round);
    expect(rounds.map((r) => r?.round)).toEqual([1, 2]);
    expect(rounds.every((r) => r?.members === 2)).toBe(true);

    const lines = log.lines();
    expect(lines.find((l) => l.event === 'dashboard')?.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(lines.filter((l) => l.event === 'round').map((l) => [l.algorithm, l.round])).toEqual([
      ['fedavg', 1],
      ['fedavg', 2],
    ]);
    expect(lines.some((l) => l.event === 'setup')).toBe(true);
  });

  it('refuses a bad --dashboard port and a bad --log-level (exit code 2)', async () => {
    expect(await runSimCommand({ ...tiny, dashboard: 'x80' })).toBe(2);
    expect(await runSimCommand({ ...tiny, dashboard: '70000' })).toBe(2);
    expect(await runSimCommand({ ...tiny, logLevel: 'loud' })).toBe(2);
  });
});
