import { defineConfig } from 'vitest/config';

// `npm run test:package`: packs subfed, installs the tarball into temp folders
// (npm registry for the dependencies, a native build of better-sqlite3) and
// runs the installed commands. Minutes, not seconds: kept out of `npm test`.
export default defineConfig({
  test: {
    include: ['test/package/**/*.test.ts'],
    testTimeout: 900_000,
    hookTimeout: 900_000,
    pool: 'forks',
  },
});
