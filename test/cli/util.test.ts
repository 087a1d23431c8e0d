// Goal: the CLI's shared argument parsers accept the documented forms and
// reject everything else with a message, and credentials never survive redact().
import { describe, expect, it } from 'vitest';
import { parseCount, parseSize, redact } from '../../src/cli/util.js';

describe('parseSize', () => {
  it('accepts plain bytes and binary units', () => {
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('128K')).toBe(131072);
    expect(parseSize('64M')).toBe(64 * 1024 * 1024);
    expect(parseSize('4g')).toBe(4 * 1024 ** 3);
    expect(parseSize('1TiB')).toBe(1024 ** 4);
  });
  it('rejects garbage, negatives and fractions', () => {
    for (const bad of ['', 'abc', '-1', '1.5M', '12Q', '0x10']) {
      expect(() => parseSize(bad), bad).toThrow(/is not a size/);
    }
  });
});

describe('parseCount', () => {
  it('accepts non-negative integers only', () => {
    expect(parseCount('0')).toBe(0);
    expect(parseCount('42')).toBe(42);
    expect(() => parseCount('-3')).toThrow();
    expect(() => parseCount('4K')).toThrow();
  });
});

describe('redact', () => {
  it('removes the values of the AWS credential variables', () => {
    const old = process.env.AWS_SECRET_ACCESS_KEY;
    process.env.AWS_SECRET_ACCESS_KEY = 'sekrit-value-123';
    try {
      expect(redact('signature for sekrit-value-123 failed')).toBe('signature for *** failed');
    } finally {
      if (old === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = old;
    }
  });
});
