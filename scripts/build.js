// Builds dist/ with TypeScript (a dev dependency), for two npm hooks:
//   prepack  (`--clean`):       npm pack / npm publish; the tarball carries dist/, so nothing compiles at install time.
//   prepare  (`--if-compiler`): `npm ci` / `npm install` in a checkout builds dist/ too; a production
//                               install of a checkout (--omit=dev) has no compiler and skips with a note.
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));

if (args.has('--if-compiler')) {
  // npm pack and publish run prepack (which builds) right before prepare.
  if (process.env.npm_command === 'pack' || process.env.npm_command === 'publish') process.exit(0);
}

let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  if (args.has('--if-compiler')) {
    process.stderr.write('subfed: TypeScript is not installed (production install), dist/ is not built here\n');
    process.exit(0);
  }
  process.stderr.write('subfed: building dist/ needs the dev dependencies (npm ci)\n');
  process.exit(1);
}

if (args.has('--clean')) rmSync(join(root, 'dist'), { recursive: true, force: true });
const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
process.exit(result.status ?? 1);
