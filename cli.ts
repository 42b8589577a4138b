#!/usr/bin/env node
/**
 * The `subfed` command. Each subcommand lives with the part it runs (sim/,
 * server/, client/); this file only wires them together, and loads each part
 * lazily: `subfed server` never pulls in tfjs, and `subfed client` never loads
 * server/ or sim/ (nor their packages, which a client-only install leaves out).
 *
 * Exit codes: 0 done, 1 runtime failure, 2 usage error (command line or config file).
 */
import { Command, CommanderError } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isModelName, MODEL_NAMES } from './client/model-names.js';
import { packageRoot } from './proto/package-root.js';

const { version } = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };

/** A mistake in the command line or a config file: printed as one line, exit code 2. */
class UsageError extends Error {}

const program = new Command('subfed')
  .description('Federated learning with personalized sparse subnetworks (Sub-FedAvg)')
  .version(version)
  .showHelpAfterError()
  .exitOverride();

/**
 * Imports a part, turning a package missing from this install into one line
 * that says so. A client-only install (`npm install --omit=optional`) carries
 * only what `subfed client` needs.
 */
async function loadPart<T>(command: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    const missing = /Cannot find (?:package|module) '([^']+)'/.exec((err as Error).message)?.[1];
    if ((err as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND' || missing === undefined || missing.startsWith('/'))
      throw err;
    throw new Error(
      `${command} needs the package '${missing}', which this install of subfed left out ` +
        '(a client-only install, npm install --omit=optional, carries only what `subfed client` needs); ' +
        'install subfed without --omit=optional',
    );
  }
}

/**
 * The subcommands whose parts are heavy (tfjs): a command that is not the one
 * asked for is registered as a stub with its name and description only, so
 * the help and the "unknown command" suggestion still list every command.
 */
const lazyCommands: Record<string, { description: string; register: (program: Command) => Promise<Command> }> = {
  sim: {
    description: 'simulate federated training: a real coordinator and many clients over loopback gRPC',
    register: async (p) => (await loadPart('subfed sim', () => import('./sim/main.js'))).registerSimCommand(p),
  },
  sweep: {
    description: 'run a grid of simulations (config fields x values) x seeds, resumable, into one table and report',
    register: async (p) => (await loadPart('subfed sweep', () => import('./sim/sweep-main.js'))).registerSweepCommand(p),
  },
  report: {
    description: "redraw a sim run folder's report.html and CSV files from its rounds.jsonl (e.g. --threshold 0.8)",
    register: async (p) => (await loadPart('subfed report', () => import('./sim/report-command.js'))).registerReportCommand(p),
  },
  client: {
    description: 'run one federated client on local data against a coordinator',
    register: async (p) => (await import('./client/main.js')).registerClientCommand(p),
  },
};
const asked = process.argv[2] === 'help' ? process.argv[3] : process.argv[2];

async function lazyCommand(name: keyof typeof lazyCommands): Promise<void> {
  const { description, register } = lazyCommands[name];
  if (asked === name) (await register(program)).description(description);
  else program.command(name).description(description);
}

await lazyCommand('sim');
await lazyCommand('sweep');
await lazyCommand('report');

program
  .command('server')
  .description('run the coordinator (gRPC + HTTP dashboard) from a JSON config file')
  .requiredOption('--config <file>', 'coordinator config (JSON); see README "Running a coordinator"')
  .action(async (flags: { config: string }) => {
    const { runServer } = await loadPart('subfed server', () => import('./server/main.js'));
    const { ConfigError } = await import('./server/config.js');
    let handle;
    try {
      handle = await runServer(flags.config);
    } catch (error) {
      if (error instanceof ConfigError) throw new UsageError(error.message);
      throw error;
    }
    process.stderr.write(
      `subfed server: gRPC on ${handle.grpcAddress}` +
        (handle.httpAddress === null ? '' : `, dashboard and HTTP API on http://${handle.httpAddress}/`) +
        '\n',
    );
  });

await lazyCommand('client');

// export, distill and predict share one part (client/export/): loaded only when one of them is asked for.
const exportCommands: Record<'export' | 'distill' | 'predict', string> = {
  export:
    "write a client's personalized model, compact (pruned channels and neurons removed), as a tfjs LayersModel or sparse container",
  distill:
    "train a smaller student on the client's data with its personalized model as teacher; compare with the student trained from scratch",
  predict: 'classify images with an exported model: PNG files or folders, or an IDX images [+ labels] file',
};
if (asked !== undefined && Object.hasOwn(exportCommands, asked)) {
  const registered = (await import('./client/export/main.js')).registerExportCommands(program);
  for (const [name, description] of Object.entries(exportCommands))
    registered[name as keyof typeof exportCommands].description(description);
} else {
  for (const [name, description] of Object.entries(exportCommands)) program.command(name).description(description);
}

program
  .command('model')
  .description("write a zoo model's manifest and seeded initial values as a coordinator model file")
  .requiredOption('--name <model>', MODEL_NAMES.join(' | '))
  .requiredOption('--out <file>', 'model file to write (JSON)')
  .option('--seed <n>', 'initialisation seed', '1')
  .action(async (flags: { name: string; out: string; seed: string }) => {
    const { createModel } = await import('./client/model.js');
    const { modelFileJson } = await import('./server/config.js');
    if (!isModelName(flags.name)) throw new UsageError(`--name: expected one of ${MODEL_NAMES.join(', ')}, got '${flags.name}'`);
    const seed = Number(flags.seed);
    if (!/^\d+$/.test(flags.seed) || !Number.isSafeInteger(seed))
      throw new UsageError(`--seed: expected a non-negative integer, got '${flags.seed}'`);
    const { initBackend } = await import('./client/backend.js');
    await initBackend();
    const model = createModel(flags.name, seed);
    writeFileSync(flags.out, modelFileJson(model.manifest, model.getWeights()));
    model.dispose();
    process.stderr.write(`subfed model: wrote ${flags.name} (seed ${seed}) to ${flags.out}\n`);
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // commander printed the message (and the help); --help and --version exit 0, every other case is a usage error.
    process.exitCode = error.exitCode === 0 ? 0 : 2;
  } else if (error instanceof UsageError) {
    process.stderr.write(`subfed: ${error.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`subfed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
