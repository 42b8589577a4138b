#!/usr/bin/env node
/**
 * The `subfed` command. Each subcommand lives with the part it runs (sim/,
 * server/, client/); this file only wires them together, and loads each part
 * lazily so that `subfed server` never pulls in tfjs.
 */
import { Command, CommanderError } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from './proto/package-root.js';

const { version } = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string };

const program = new Command('subfed')
  .description('Federated learning with personalized sparse subnetworks (Sub-FedAvg)')
  .version(version)
  .showHelpAfterError()
  .exitOverride();

// sim and client bring tfjs with them: register them only when they may be the command asked for.
const asked = process.argv[2];
const mayRun = (name: string): boolean => asked === undefined || asked.startsWith('-') || asked === 'help' || asked === name;

if (mayRun('sim')) {
  const { registerSimCommand } = await import('./sim/main.js');
  registerSimCommand(program);
}

program
  .command('server')
  .description('run the coordinator (gRPC + HTTP) from a JSON config file')
  .requiredOption('--config <file>', 'coordinator config (JSON); see README "Running a coordinator"')
  .action(async (flags: { config: string }) => {
    const { runServer } = await import('./server/main.js');
    const handle = await runServer(flags.config);
    process.stderr.write(
      `subfed server: gRPC on ${handle.grpcAddress}` +
        (handle.httpPort === null ? '' : `, HTTP on port ${handle.httpPort}`) +
        '\n',
    );
  });

if (mayRun('client')) {
  const { registerClientCommand } = await import('./client/main.js');
  registerClientCommand(program);
}

program
  .command('model')
  .description("write a zoo model's manifest and seeded initial values as a coordinator model file")
  .requiredOption('--name <model>', 'mlp | lenet5-mnist | lenet5-cifar | lenet5-bn-mnist | lenet5-bn-cifar')
  .requiredOption('--out <file>', 'model file to write (JSON)')
  .option('--seed <n>', 'initialisation seed', '1')
  .action(async (flags: { name: string; out: string; seed: string }) => {
    const { createModel, isModelName, MODEL_NAMES } = await import('./client/model.js');
    const { modelFileJson } = await import('./server/config.js');
    if (!isModelName(flags.name)) throw new UsageError(`--name: expected one of ${MODEL_NAMES.join(', ')}, got '${flags.name}'`);
    const seed = Number(flags.seed);
    if (!Number.isSafeInteger(seed) || seed < 0)
      throw new UsageError(`--seed: expected a non-negative integer, got '${flags.seed}'`);
    const { initBackend } = await import('./client/backend.js');
    await initBackend();
    const model = createModel(flags.name, seed);
    writeFileSync(flags.out, modelFileJson(model.manifest, model.getWeights()));
    model.dispose();
    process.stderr.write(`subfed model: wrote ${flags.name} (seed ${seed}) to ${flags.out}\n`);
  });

/** A mistake in the command line: printed as one line, exit code 2. */
class UsageError extends Error {}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    process.exitCode = error.exitCode;
  } else if (error instanceof UsageError) {
    process.stderr.write(`subfed: ${error.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`subfed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  }
}
