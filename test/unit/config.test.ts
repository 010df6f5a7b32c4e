import { describe, expect, it } from 'vitest';
import { ConfigError, helpText, parseConfig } from '../../src/config.ts';
import { formatDuration, parseDuration } from '../../src/kube/duration.ts';

describe('parseConfig', () => {
  it('has client-go election defaults and takes flags over environment variables', () => {
    const config = parseConfig(['--workers', '8'], {
      OTO_WORKERS: '2',
      OTO_LOG_LEVEL: 'debug',
      POD_NAMESPACE: 'ops',
    });
    if (config === 'help') throw new Error('unexpected help');
    expect(config.workers).toBe(8);
    expect(config.logLevel).toBe('debug');
    expect(config.namespace).toBe('ops');
    expect([config.leaseDurationMs, config.renewDeadlineMs, config.retryPeriodMs]).toEqual([
      15_000, 10_000, 2_000,
    ]);
    expect(config.allowInsecureHttp).toBe(false);
  });

  it.each([
    { args: ['--workers', '0'], message: /--workers/ },
    { args: ['--lease-duration', '5s', '--renew-deadline', '10s'], message: /--lease-duration/ },
    { args: ['--request-timeout', 'soon'], message: /--request-timeout/ },
    { args: ['--no-such-flag'], message: /no-such-flag/ },
  ])('rejects $args', ({ args, message }) => {
    expect(() => parseConfig(args, {})).toThrow(ConfigError);
    expect(() => parseConfig(args, {})).toThrow(message);
  });

  it('documents every flag with its environment variable', () => {
    expect(parseConfig(['--help'], {})).toBe('help');
    expect(helpText()).toContain('--allow-insecure-http');
    expect(helpText()).toContain('[OTO_ALLOWED_HOSTS]');
  });
});

describe('durations', () => {
  it.each([
    ['570s', 570_000],
    ['1h30m', 5_400_000],
    ['1.5h', 5_400_000],
    ['250ms', 250],
    ['4320h', 4320 * 3_600_000],
  ])('%s = %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
  it('rejects what the CRD pattern rejects', () => {
    expect(() => parseDuration('10 minutes')).toThrow(/invalid duration/);
    expect(() => parseDuration('')).toThrow();
  });
  it('formats back', () => {
    expect(formatDuration(5_400_000)).toBe('1h30m');
    expect(formatDuration(570_000)).toBe('9m30s');
  });
});
