import js from '@eslint/js';
import globals from 'globals';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import tseslint from 'typescript-eslint';

/**
 * The folder arrows of the architecture: which of our top-level parts each part
 * may import, and which packages it must not load. One table, enforced for
 * imports at any depth (`client/algorithms/x.ts` importing `../../server/x.js`
 * resolves to `server/` and is refused).
 */
export const LAYERS = {
  proto: { parts: [], packages: ['@tensorflow/', 'better-sqlite3', 'fastify', 'prom-client', 'chart.js', 'pino'] },
  server: { parts: ['proto'], packages: ['@tensorflow/'] },
  client: { parts: ['proto'], packages: ['better-sqlite3', 'fastify', 'prom-client', 'chart.js'] },
  sim: { parts: ['proto', 'server', 'client'], packages: [] },
};

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const PARTS = new Set(['proto', 'server', 'client', 'sim', 'bench', 'test']);

/** Top-level part of a path inside the repository, or undefined outside the parts. */
function partOf(file) {
  const relative = path.relative(ROOT, file);
  if (relative.startsWith('..') || path.isAbsolute(relative)) return undefined;
  const first = relative.split(path.sep)[0];
  return PARTS.has(first) ? first : undefined;
}

const layerRule = {
  meta: {
    type: 'problem',
    schema: [],
    messages: {
      part: "{{from}}/ may not import {{to}}/ ('{{source}}'): allowed are {{allowed}}",
      package: "{{from}}/ may not load '{{source}}'",
    },
  },
  create(context) {
    const file = context.filename;
    const from = partOf(file);
    const layer = from === undefined ? undefined : LAYERS[from];
    if (layer === undefined) return {};
    const check = (node, source) => {
      if (typeof source !== 'string') return;
      if (source.startsWith('.')) {
        const to = partOf(path.resolve(path.dirname(file), source));
        if (to !== undefined && to !== from && !layer.parts.includes(to)) {
          const allowed = layer.parts.length === 0 ? 'none of ours' : layer.parts.map((p) => `${p}/`).join(', ');
          context.report({ node, messageId: 'part', data: { from, to, source, allowed } });
        }
        return;
      }
      if (layer.packages.some((p) => (p.endsWith('/') ? source.startsWith(p) : source === p || source.startsWith(`${p}/`)))) {
        context.report({ node, messageId: 'package', data: { from, source } });
      }
    };
    return {
      ImportDeclaration: (node) => check(node.source, node.source.value),
      ExportNamedDeclaration: (node) => node.source && check(node.source, node.source.value),
      ExportAllDeclaration: (node) => check(node.source, node.source.value),
      ImportExpression: (node) => node.source.type === 'Literal' && check(node.source, node.source.value),
    };
  },
};

/** The layer rule alone, also used by test/lint to lint the fixtures that must fail. */
export const layerBoundaries = {
  plugins: { subfed: { rules: { layers: layerRule } } },
  rules: { 'subfed/layers': 'error' },
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'bench/results/**', 'runs/**', 'data/**', 'test/lint/fixtures/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: { allowDefaultProject: ['*.js'] }, tsconfigRootDir: ROOT } },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/switch-exhaustiveness-check': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  { files: ['**/*.js'], extends: [tseslint.configs.disableTypeChecked] },
  { files: ['scripts/**/*.js'], languageOptions: { globals: globals.node } },
  // The dashboard page's script runs in the browser, with chart.js loaded before it.
  {
    files: ['server/dashboard/**/*.js'],
    languageOptions: { sourceType: 'script', globals: { ...globals.browser, Chart: 'readonly' } },
  },
  // The export's browser page: tfjs (core, cpu backend, layers) is loaded before it.
  {
    files: ['client/export/web/**/*.js'],
    languageOptions: { sourceType: 'script', globals: { ...globals.browser, tf: 'readonly' } },
  },
  layerBoundaries,
);
