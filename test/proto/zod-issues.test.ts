import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { describeValue, formatZodIssues } from '../../proto/zod-issues.js';

const schema = z.strictObject({
  rounds: z.int().positive({ error: 'expected a positive integer' }),
  grpc: z.strictObject({ port: z.int().max(65535, { error: 'expected a port number' }) }).optional(),
});

function issuesOf(input: unknown, options: Parameters<typeof formatZodIssues>[1] = {}): string[] {
  const result = schema.safeParse(input);
  if (result.success) throw new Error('expected the input to fail');
  return formatZodIssues(result.error, options);
}

describe('formatZodIssues', () => {
  it('names each field and what it held', () => {
    expect(issuesOf({ rounds: -3, grpc: { port: 70000 } }, { input: { rounds: -3, grpc: { port: 70000 } } })).toEqual([
      'rounds: expected a positive integer, got -3',
      'grpc.port: expected a port number, got 70000',
    ]);
  });

  it('lists unknown fields, with the root named as asked', () => {
    expect(issuesOf({ rounds: 1, epoch: 5 })).toEqual(['(root): unknown field(s) epoch']);
    expect(issuesOf('x', { root: '(config)' })[0]).toMatch(/^\(config\): /);
  });

  it('names fields as the caller spells them', () => {
    const fieldName = (path: readonly PropertyKey[]) => `--${path.map(String).join('-')}`;
    expect(issuesOf({ rounds: 0, grpc: { port: 1e6 } }, { input: { rounds: 0 }, fieldName })).toEqual([
      '--rounds: expected a positive integer, got 0',
      '--grpc-port: expected a port number, got nothing',
    ]);
    expect(issuesOf('x', { fieldName })[0]).toMatch(/^\(root\): /);
  });

  it('leaves out the value when no input is given', () => {
    expect(issuesOf({ rounds: 0 })).toEqual(['rounds: expected a positive integer']);
  });
});

describe('describeValue', () => {
  it('renders JSON, shortens long values and names what JSON cannot show', () => {
    expect(describeValue(undefined)).toBe('nothing');
    expect(describeValue({ a: 1 })).toBe('{"a":1}');
    expect(describeValue('x'.repeat(100))).toHaveLength(60);
    expect(describeValue(10n)).toBe('a bigint');
    expect(describeValue(() => 1)).toBe('a function');
  });
});
