/**
 * What a run folder records about where and with what a run ran, beside its
 * resolved config (run.json): the subfed version and git commit, the tfjs
 * backend the workers actually started, the machine, and how the run ended.
 * The sweep reads `status` to skip the cells that finished.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../proto/package-root.js';
import type { BackendName } from '../client/backend.js';

export interface SubfedVersion {
  readonly version: string;
  /** HEAD of the git checkout subfed runs from; null in an installed package (no checkout of its own). */
  readonly commit: string | null;
  /** Uncommitted changes to tracked files in that checkout; null without a checkout. */
  readonly dirty: boolean | null;
}

export interface Machine {
  readonly cores: number;
  readonly cpu: string;
  readonly memoryBytes: number;
  readonly node: string;
  readonly platform: NodeJS.Platform;
  readonly arch: string;
}

/** How a run ended; `running` while it runs (or when the process died). */
export type RunStatus = 'running' | 'completed' | 'interrupted' | 'failed';

export interface RunRecord {
  readonly status: RunStatus;
  readonly startedAt: string;
  /** Null while running. */
  readonly finishedAt: string | null;
  readonly subfed: SubfedVersion;
  /** The tfjs backend the workers started (the config's `backend` may say auto). */
  readonly backend: BackendName;
  readonly machine: Machine;
  /** Each seed's run, in order; a seed not reached is absent. */
  readonly seeds: readonly { readonly seed: number; readonly status: RunStatus }[];
}

export const RUN_RECORD_FILE = 'run.json';

let cachedVersion: SubfedVersion | undefined;

/** The package's version, and the commit of its git checkout when it is one (not a folder inside someone else's repository). */
export function subfedVersion(): SubfedVersion {
  if (cachedVersion !== undefined) return cachedVersion;
  const root = packageRoot();
  const { version } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
  const git = (...args: string[]): string | null => {
    try {
      return execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    } catch {
      return null; // no git, or not a checkout
    }
  };
  // An installed package may sit inside another project's checkout: its commit is not ours.
  const top = git('rev-parse', '--show-toplevel');
  const ours = top !== null && path.resolve(top) === path.resolve(root);
  const commit = ours ? git('rev-parse', 'HEAD') : null;
  const status = ours ? git('status', '--porcelain', '--untracked-files=no') : null;
  cachedVersion = { version, commit, dirty: commit === null || status === null ? null : status !== '' };
  return cachedVersion;
}

export function machine(): Machine {
  return {
    cores: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memoryBytes: os.totalmem(),
    node: process.version,
    platform: process.platform,
    arch: process.arch,
  };
}

export function writeRunRecord(folder: string, record: RunRecord): void {
  writeFileSync(path.join(folder, RUN_RECORD_FILE), `${JSON.stringify(record, null, 2)}\n`);
}

/** The folder's run.json, or undefined when it has none or it does not parse. */
export function readRunRecord(folder: string): RunRecord | undefined {
  try {
    return JSON.parse(readFileSync(path.join(folder, RUN_RECORD_FILE), 'utf8')) as RunRecord;
  } catch {
    return undefined;
  }
}
