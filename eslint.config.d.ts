// Types of what test/lint imports from eslint.config.js.
import type { Linter } from 'eslint';

export declare const LAYERS: Record<string, { parts: string[]; packages: string[] }>;
export declare const layerBoundaries: Linter.Config;
declare const config: Linter.Config[];
export default config;
