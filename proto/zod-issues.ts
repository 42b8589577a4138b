// One wording for every validation error of a zod schema (configs, flags, task
// configs, file headers): "field.path: what was expected, got <value>", one
// issue per entry, so each error names the field at fault.
import type { z } from 'zod';

export interface IssueFormatOptions {
  /** The value that was parsed: when given, each issue says what the field held ("got ..."). */
  readonly input?: unknown;
  /** How to name the whole value when the issue is about it; default "(root)". */
  readonly root?: string;
  /**
   * How to name a field (a non-empty path) when the user wrote it under another
   * name, e.g. a command-line flag (`stateDir` -> `--state-dir`); default the dotted path.
   */
  readonly fieldName?: (path: readonly PropertyKey[]) => string;
}

function valueAt(data: unknown, path: readonly PropertyKey[]): unknown {
  let current: unknown = data;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

/** A short rendering of a value for an error message. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  let text: string;
  try {
    // undefined for functions and symbols; throws for bigints and cycles.
    text = JSON.stringify(value) ?? `a ${typeof value}`;
  } catch {
    text = `a ${typeof value}`;
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** One line per issue: `rounds: expected a positive integer, got -3`, `(root): unknown field(s) epoch`. */
export function formatZodIssues(error: z.ZodError, options: IssueFormatOptions = {}): string[] {
  return error.issues.map((issue) => {
    const field =
      issue.path.length === 0
        ? (options.root ?? '(root)')
        : (options.fieldName?.(issue.path) ?? issue.path.map(String).join('.'));
    if (issue.code === 'unrecognized_keys') return `${field}: unknown field(s) ${issue.keys.join(', ')}`;
    const got = 'input' in options ? `, got ${describeValue(valueAt(options.input, issue.path))}` : '';
    return `${field}: ${issue.message}${got}`;
  });
}
