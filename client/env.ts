/**
 * Settings read from the environment (SUBFED_BACKEND, SUBFED_ENGINE): parsed
 * once where they are read, with the same schema wording as every other input,
 * so a bad value is an error naming the variable and the allowed values.
 */
import { z } from 'zod';
import { formatZodIssues } from '../proto/zod-issues.js';

/** An environment variable holding a value it may not hold. */
export class EnvironmentError extends Error {
  override readonly name = 'EnvironmentError';
}

/** The variable's value, one of `choices`, or undefined when it is not set. */
export function envChoice<const T extends readonly [string, ...string[]]>(
  variable: string,
  choices: T,
  env: Readonly<Record<string, string | undefined>> = process.env,
): T[number] | undefined {
  const value = env[variable];
  if (value === undefined) return undefined;
  const result = z.enum(choices, { error: `expected one of ${choices.join(', ')}` }).safeParse(value);
  if (result.success) return result.data;
  throw new EnvironmentError(formatZodIssues(result.error, { input: value, root: variable }).join('; '));
}
