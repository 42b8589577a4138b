/**
 * `subfed sim`: flags -> validated config -> runSimulation, with a progress bar,
 * the run folder written as rounds complete, and the final table. Ctrl-C once
 * lets the current round finish and writes what is done; twice exits at once.
 */
import { Command } from 'commander';
import cliProgress from 'cli-progress';
import path from 'node:path';
import { algorithmNames, allAlgorithms } from '../client/algorithms/registry.js';
import { resolveSimConfig, SimConfigError, type SimFlags } from './presets.js';
import { RunWriter, defaultRunFolder, formatSummaryTable } from './report.js';
import { runSimulation, type SimulationEvent } from './run.js';

/** Adds the `sim` subcommand to the root program. */
export function registerSimCommand(program: Command): Command {
  return program
    .command('sim')
    .description('simulate federated training: a real coordinator and many clients over loopback gRPC')
    .option('--preset <name>', 'quick | paper (default quick)')
    .option('--compare <list>', 'comma-separated algorithms run on the identical split and seeds')
    .option('--algorithm <name>', `one algorithm: ${algorithmNames().join(' | ')}`)
    .option('--rounds <n>', 'rounds per algorithm')
    .option('--clients <n>', 'number of clients')
    .option('--fraction <f>', 'fraction of clients sampled per round, in (0, 1]')
    .option('--local-epochs <n>', 'local epochs per round')
    .option('--dataset <name>', 'fashion-mnist | mnist | cifar10 | synthetic')
    .option('--data-dir <dir>', 'folder holding the dataset files')
    .option('--out <dir>', 'run folder (default runs/<timestamp>-<preset>)')
    .option('--eval-every <n>', 'evaluate every client every n rounds and at the end (paper 10, quick 5)')
    .option('--workers <n>', 'training worker threads (default one per core)')
    .option('--values <enc>', 'value encoding on the wire: f32 | f16 | int8')
    .option('--seed <n>', 'seed of the split, the models and the sampling')
    .option('--backend <name>', 'tfjs backend: auto | node | wasm | cpu')
    .addHelpText(
      'after',
      `\nAlgorithms:\n${allAlgorithms()
        .map((a) => `  ${a.name.padEnd(14)}${a.summary}`)
        .join('\n')}`,
    )
    .action(async (flags: SimFlags) => {
      process.exitCode = await runSimCommand(flags);
    });
}

/** Runs `subfed sim` with commander's parsed flags; resolves to the process exit code. */
export async function runSimCommand(flags: SimFlags): Promise<number> {
  let config;
  try {
    config = resolveSimConfig(flags);
  } catch (error) {
    if (error instanceof SimConfigError) {
      process.stderr.write(`subfed sim: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  const folder = config.out ?? defaultRunFolder(config);
  const writer = new RunWriter(folder, config);

  const stop = new AbortController();
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts += 1;
    if (interrupts > 1) {
      process.stderr.write('\nsubfed sim: second Ctrl-C, exiting now\n');
      process.exit(130);
    }
    process.stderr.write('\nsubfed sim: stopping after the current round (Ctrl-C again to exit now)\n');
    stop.abort();
  };
  process.on('SIGINT', onSigint);

  const bar = new cliProgress.SingleBar(
    {
      format: '{algorithm} round {round}/{rounds} [{bar}] {value}/{total} members trained {status}',
      hideCursor: true,
      clearOnComplete: false,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  const rounds = config.rounds;
  // A bar needs a terminal; in a log (CI, nohup, a pipe) each round gets one line instead.
  const interactive = process.stderr.isTTY === true;
  let notes: string[] = [];
  const onEvent = (event: SimulationEvent): void => {
    switch (event.kind) {
      case 'setup':
        notes = event.notes;
        process.stderr.write(`${[...event.notes, event.labelTable].join('\n')}\n`);
        return;
      case 'round-start':
        if (interactive) bar.start(event.members, 0, { algorithm: event.algorithm, round: event.round, rounds, status: '' });
        return;
      case 'member-done':
        if (interactive) bar.update(event.done);
        return;
      case 'evaluating':
        if (interactive) bar.update({ status: `| evaluating ${event.scope === 'all' ? 'every client' : 'the global model'}` });
        return;
    }
  };

  try {
    for await (const report of runSimulation(config, { signal: stop.signal, onEvent })) {
      writer.appendRound(report);
      const acc = report.allClientsAccuracy ?? report.membersAccuracy;
      const status = `acc ${(acc.mean * 100).toFixed(1)}% (${report.allClientsAccuracy ? 'all clients' : 'members'}) | ${report.wallSeconds.toFixed(1)} s`;
      if (interactive) {
        bar.update({ status: `| ${status}` });
        bar.stop();
      } else {
        process.stderr.write(`${report.algorithm} round ${report.round}/${rounds}: ${status}\n`);
      }
    }
  } catch (error) {
    bar.stop();
    process.stderr.write(`subfed sim: ${error instanceof Error ? error.message : String(error)}\n`);
    writer.finish(notes);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
  }
  const summaries = writer.finish(notes);
  process.stdout.write(`\n${formatSummaryTable(summaries)}\n\n`);
  for (const note of notes) process.stdout.write(`note: ${note}\n`);
  process.stdout.write(`run folder: ${path.resolve(folder)} (report.html, rounds.jsonl, summary.json, config.json)\n`);
  return stop.signal.aborted ? 130 : 0;
}
