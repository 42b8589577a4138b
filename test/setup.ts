// Masks keep their bits in #private fields, which toEqual cannot see: without
// this tester any two Masks would compare equal. Compare them by value instead.
import { expect } from 'vitest';
import { Mask } from '../proto/mask.js';

expect.addEqualityTesters([
  function maskEquality(a: unknown, b: unknown): boolean | undefined {
    const aIsMask = a instanceof Mask;
    const bIsMask = b instanceof Mask;
    if (aIsMask && bIsMask) return a.equals(b);
    return aIsMask || bIsMask ? false : undefined;
  },
]);
