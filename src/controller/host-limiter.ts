// Caps concurrent token requests per token-endpoint host, so a cold start of thousands of
// connections does not stampede one provider (and trip its per-app rate limits).
export class HostLimiter {
  private readonly active = new Map<string, number>();
  private readonly waiting = new Map<string, (() => void)[]>();

  private readonly perHost: number;

  constructor(perHost: number) {
    this.perHost = perHost;
    if (perHost < 1) throw new Error('the per-host concurrency limit must be at least 1');
  }

  async run<T>(host: string, task: () => Promise<T>): Promise<T> {
    await this.acquire(host);
    try {
      return await task();
    } finally {
      this.release(host);
    }
  }

  inFlight(host: string): number {
    return this.active.get(host) ?? 0;
  }

  private acquire(host: string): Promise<void> {
    const current = this.active.get(host) ?? 0;
    if (current < this.perHost) {
      this.active.set(host, current + 1);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const queue = this.waiting.get(host) ?? [];
      queue.push(resolve);
      this.waiting.set(host, queue);
    });
  }

  private release(host: string): void {
    const queue = this.waiting.get(host);
    const next = queue?.shift();
    if (next) {
      // The slot passes straight to the next waiter; the count stays.
      if (queue?.length === 0) this.waiting.delete(host);
      next();
      return;
    }
    const current = (this.active.get(host) ?? 1) - 1;
    if (current === 0) this.active.delete(host);
    else this.active.set(host, current);
  }
}
