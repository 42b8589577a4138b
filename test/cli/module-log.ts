// Which modules a Node process loads: a module-resolution hook, written to a
// temp folder and registered with --import, appends every resolved URL to a
// file. The client-only checks read it.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Packages only the coordinator, the dashboard and the simulator load. */
export const SERVER_PACKAGES = [
  'better-sqlite3',
  'fastify',
  '@fastify/sse',
  'prom-client',
  'chart.js',
  'cli-progress',
  'grpc-health-check',
  '@grpc/reflection',
  'pino-pretty',
];

export interface ModuleLog {
  /** Node arguments that register the hook. */
  readonly nodeArgs: string[];
  /** Environment variables the hook needs. */
  readonly env: Record<string, string>;
  /** Every URL resolved so far. */
  urls(): string[];
}

export function moduleLog(): ModuleLog {
  const dir = mkdtempSync(join(tmpdir(), 'subfed-modules-'));
  const log = join(dir, 'modules.log');
  writeFileSync(log, '');
  writeFileSync(
    join(dir, 'hooks.mjs'),
    `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context);
  appendFileSync(process.env.SUBFED_MODULE_LOG, result.url + '\\n');
  return result;
}
`,
  );
  writeFileSync(
    join(dir, 'register.mjs'),
    `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`,
  );
  return {
    nodeArgs: ['--import', pathToFileURL(join(dir, 'register.mjs')).href],
    env: { SUBFED_MODULE_LOG: log },
    urls: () =>
      readFileSync(log, 'utf8')
        .split('\n')
        .filter((l) => l !== ''),
  };
}

/** The loaded modules that a client must not load: our server/ and sim/ parts and the server-only packages. */
export function serverModules(urls: readonly string[], packageRoot: string): string[] {
  const root = pathToFileURL(packageRoot).href.replace(/\/?$/, '/');
  return urls.filter((url) => {
    if (SERVER_PACKAGES.some((p) => url.includes(`/node_modules/${p}/`))) return true;
    if (!url.startsWith(root)) return false;
    const rel = url.slice(root.length);
    if (rel.startsWith('node_modules/')) return false;
    const part = rel.replace(/^dist\//, '');
    return part.startsWith('server/') || part.startsWith('sim/');
  });
}
