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

  it('has chain-engine defaults, and the Secret opt-in label only when set', () => {
    const defaults = parseConfig([], {});
    if (defaults === 'help') throw new Error('unexpected help');
    expect([defaults.persistBudgetMs, defaults.minRequestGapMs]).toEqual([60_000, 10_000]);
    expect(defaults.requireSecretLabel).toBeUndefined();
    const set = parseConfig(['--min-request-gap', '1s'], { OTO_REQUIRE_SECRET_LABEL: 'example.com/oauth' });
    if (set === 'help') throw new Error('unexpected help');
    expect(set.minRequestGapMs).toBe(1_000);
    expect(set.requireSecretLabel).toBe('example.com/oauth');
  });

  it.each([
    { args: ['--workers', '0'], message: /--workers/ },
    { args: ['--lease-duration', '5s', '--renew-deadline', '10s'], message: /--lease-duration/ },
    { args: ['--request-timeout', 'soon'], message: /--request-timeout/ },
    { args: ['--no-such-flag'], message: /no-such-flag/ },
    { args: ['--drain-timeout', '0s'], message: /--drain-timeout must be greater than zero/ },
    { args: ['--drain-timeout', '-5s'], message: /--drain-timeout/ },
    { args: ['--drain-timeout', '20'], message: /--drain-timeout/ },
    { args: ['--reconcile-deadline', '30s'], message: /--reconcile-deadline must exceed --request-timeout/ },
    {
      args: ['--login-deadline', '5m'],
      message: /--reconcile-deadline must exceed --request-timeout and --login-deadline/,
    },
    { args: ['--login-deadline', '0s'], message: /--login-deadline must be greater than zero/ },
    { args: ['--max-in-flight-per-namespace', '0'], message: /--max-in-flight-per-namespace/ },
    {
      args: ['--watch-namespaces', 'apps,Billing'],
      message: /--watch-namespaces: "Billing" is not a namespace/,
    },
    { args: ['--watch-namespaces', 'a_b'], message: /--watch-namespaces: "a_b" is not a namespace/ },
    {
      args: ['--watch-namespaces', 'a'.repeat(64)],
      message: /--watch-namespaces: .* is not a namespace/,
    },
  ])('rejects $args', ({ args, message }) => {
    expect(() => parseConfig(args, {})).toThrow(ConfigError);
    expect(() => parseConfig(args, {})).toThrow(message);
  });

  it.each([
    { name: 'the default', args: [], env: {}, drainTimeoutMs: 20_000 },
    { name: 'the flag', args: ['--drain-timeout', '45s'], env: {}, drainTimeoutMs: 45_000 },
    { name: 'OTO_DRAIN_TIMEOUT', args: [], env: { OTO_DRAIN_TIMEOUT: '1m' }, drainTimeoutMs: 60_000 },
    {
      name: 'the flag over OTO_DRAIN_TIMEOUT',
      args: ['--drain-timeout=500ms'],
      env: { OTO_DRAIN_TIMEOUT: '1m' },
      drainTimeoutMs: 500,
    },
  ])('takes the drain timeout from $name', ({ args, env, drainTimeoutMs }) => {
    const config = parseConfig(args, env);
    if (config === 'help') throw new Error('unexpected help');
    expect(config.drainTimeoutMs).toBe(drainTimeoutMs);
    expect(helpText()).toContain('[OTO_DRAIN_TIMEOUT]');
  });

  it.each([
    { name: 'the defaults', args: [], workers: 4, perNamespace: 3 },
    { name: 'one worker', args: ['--workers', '1'], workers: 1, perNamespace: 1 },
    { name: 'eight workers', args: ['--workers', '8'], workers: 8, perNamespace: 7 },
    {
      name: 'the flag',
      args: ['--workers', '8', '--max-in-flight-per-namespace', '2'],
      workers: 8,
      perNamespace: 2,
    },
  ])('leaves workers for other namespaces: $name', ({ args, workers, perNamespace }) => {
    const config = parseConfig(args, {});
    if (config === 'help') throw new Error('unexpected help');
    expect([config.workers, config.maxInFlightPerNamespace]).toEqual([workers, perNamespace]);
  });

  it.each([
    { name: 'unset: every namespace', args: [], env: {}, watchNamespaces: [] },
    { name: 'one', args: ['--watch-namespaces', 'apps'], env: {}, watchNamespaces: ['apps'] },
    {
      name: 'a list, spaces and repeats dropped',
      args: ['--watch-namespaces', ' apps, billing,,apps '],
      env: {},
      watchNamespaces: ['apps', 'billing'],
    },
    {
      name: 'OTO_WATCH_NAMESPACES',
      args: [],
      env: { OTO_WATCH_NAMESPACES: 'a,b' },
      watchNamespaces: ['a', 'b'],
    },
  ])('watches namespaces: $name', ({ args, env, watchNamespaces }) => {
    const config = parseConfig(args, env);
    if (config === 'help') throw new Error('unexpected help');
    expect(config.watchNamespaces).toEqual(watchNamespaces);
  });

  it('refuses the old OTO_WATCH_NAMESPACE instead of ignoring it (and watching every namespace)', () => {
    expect(() => parseConfig([], { OTO_WATCH_NAMESPACE: 'apps' })).toThrow(
      /OTO_WATCH_NAMESPACE was renamed: set OTO_WATCH_NAMESPACES/,
    );
  });

  it('has deadlines for a reconcile and a login walk', () => {
    const defaults = parseConfig([], {});
    if (defaults === 'help') throw new Error('unexpected help');
    expect([defaults.requestTimeoutMs, defaults.loginDeadlineMs, defaults.reconcileDeadlineMs]).toEqual([
      30_000, 120_000, 180_000,
    ]);
    const set = parseConfig(['--login-deadline', '8s', '--reconcile-deadline', '15s'], {
      OTO_REQUEST_TIMEOUT: '5s',
    });
    if (set === 'help') throw new Error('unexpected help');
    expect([set.requestTimeoutMs, set.loginDeadlineMs, set.reconcileDeadlineMs]).toEqual([
      5_000, 8_000, 15_000,
    ]);
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
    // The maximum, ten 365-day years, in two spellings.
    ['87600h', 315_360_000_000],
    ['87599h59m59s1000ms', 315_360_000_000],
  ])('%s = %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
  it('rejects what the CRD pattern rejects', () => {
    expect(() => parseDuration('10 minutes')).toThrow(/invalid duration/);
    expect(() => parseDuration('')).toThrow();
  });
  // Above the maximum a refresh time could be past what a Date holds; no such value gets through.
  it.each([
    { name: 'one millisecond too long', text: '87600h1ms' },
    { name: 'parts that each fit but not their sum', text: '50000h50000h' },
    { name: 'beyond Go durations (the CRD example)', text: '3000000000h' },
    { name: 'in milliseconds', text: '315360000001ms' },
    { name: 'digits that Number() makes Infinity', text: `${'9'.repeat(400)}h` },
  ])('rejects a duration above 10 years: $name', ({ text }) => {
    expect(() => parseDuration(text)).toThrow(/invalid duration .*longer than the maximum, 87600h/);
  });
  it('formats back', () => {
    expect(formatDuration(5_400_000)).toBe('1h30m');
    expect(formatDuration(570_000)).toBe('9m30s');
  });
});
