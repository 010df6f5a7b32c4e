// Storage for the test OpenID provider: an in-memory oidc-provider adapter (one Store per server)
// that adds what oidc-provider 9 lacks for refresh tokens.
//
// How oidc-provider 9 treats refresh tokens
// (https://github.com/panva/node-oidc-provider/blob/v9.13.3/lib/actions/grants/refresh_token.js): a
// token whose payload has `consumed` set is destroyed, its grant revoked (every AccessToken /
// RefreshToken / AuthorizationCode with that grantId, and the Grant itself, see
// https://github.com/panva/node-oidc-provider/blob/v9.13.3/lib/helpers/revoke.js, which emits
// 'grant.revoked') and the request fails with invalid_grant "refresh token already used". With
// rotation it calls `adapter.consume(jti)` on the presented token and saves a successor. It has no
// grace window, so this adapter supplies one: within the window `find` hides `consumed` and the
// provider answers normally with a new successor (the earlier successor stays valid). The adapter
// also makes consumption atomic, so two concurrent presentations of one token cannot both succeed
// outside the window: the loser is treated as a reuse.
import type { AsyncLocalStorage } from 'node:async_hooks';
import type { Payload } from './provider.ts';
import type { Presented } from './types.ts';

export interface Entry {
  model: string;
  payload: Payload;
  expiresAtMs: number | undefined;
  /** First consumption, in ms (the payload's `consumed` is in seconds). */
  consumedAtMs?: number;
}

/** What one token request did to refresh tokens, for the refresh log (inspection.ts). */
export interface RequestRecord {
  presented?: Presented;
  revokedFamily: boolean;
}

export class Store {
  private readonly entries = new Map<string, Entry>();

  private key(model: string, id: string): string {
    return `${model}:${id}`;
  }

  get(model: string, id: string): Entry | undefined {
    const key = this.key(model, id);
    const entry = this.entries.get(key);
    if (entry?.expiresAtMs !== undefined && entry.expiresAtMs <= Date.now()) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  set(model: string, id: string, payload: Payload, expiresInSec: number | undefined): void {
    const expiresAtMs = typeof expiresInSec === 'number' ? Date.now() + expiresInSec * 1000 : undefined;
    this.entries.set(this.key(model, id), { model, payload: structuredClone(payload), expiresAtMs });
  }

  delete(model: string, id: string): void {
    this.entries.delete(this.key(model, id));
  }

  findBy(model: string, field: 'uid' | 'userCode', value: string): Payload | undefined {
    for (const [key, entry] of this.entries) {
      if (entry.model === model && entry.payload[field] === value) {
        return this.get(model, key.slice(model.length + 1))?.payload;
      }
    }
    return undefined;
  }

  /** Deletes the model's entries of a grant (every model when `model` is undefined). */
  revokeByGrantId(grantId: string, model?: string): void {
    for (const [key, entry] of this.entries) {
      if ((model === undefined || entry.model === model) && entry.payload.grantId === grantId) {
        this.entries.delete(key);
      }
    }
  }

  /** Deletes a grant and every token of it. */
  revokeGrant(grantId: string): void {
    this.revokeByGrantId(grantId);
    this.delete('Grant', grantId);
  }

  grantIds(): string[] {
    const ids: string[] = [];
    for (const [key, entry] of this.entries) {
      if (entry.model === 'Grant') ids.push(key.slice('Grant:'.length));
    }
    return ids;
  }
}

export interface RotationContext {
  store: Store;
  invalidGrant: (description: string) => Error;
  graceMs: number;
  /** The record of the token request being served, if any. */
  requests: AsyncLocalStorage<RequestRecord>;
}

/** State of a stored refresh token as a presentation of it would find it. */
export function classify(entry: Entry | undefined, graceMs: number, now: number): Presented {
  if (!entry) return 'unknown';
  if (entry.consumedAtMs === undefined) return 'current';
  return now - entry.consumedAtMs < graceMs ? 'in-grace' : 'reused';
}

export class HarnessAdapter {
  private readonly model: string;
  private readonly ctx: RotationContext;

  constructor(model: string, ctx: RotationContext) {
    this.model = model;
    this.ctx = ctx;
  }

  upsert(id: string, payload: Payload, expiresIn?: number): Promise<void> {
    this.ctx.store.set(this.model, id, payload, expiresIn);
    return Promise.resolve();
  }

  find(id: string): Promise<Payload | undefined> {
    const entry = this.ctx.store.get(this.model, id);
    if (this.model !== 'RefreshToken') return Promise.resolve(entry && structuredClone(entry.payload));

    const presented = classify(entry, this.ctx.graceMs, Date.now());
    const record = this.ctx.requests.getStore();
    if (record && record.presented === undefined) record.presented = presented;
    if (!entry) return Promise.resolve(undefined);
    const payload = structuredClone(entry.payload);
    // Within the grace window the provider must see a usable token and answer as for a current one.
    if (presented === 'in-grace') delete payload.consumed;
    return Promise.resolve(payload);
  }

  findByUid(uid: string): Promise<Payload | undefined> {
    return Promise.resolve(this.ctx.store.findBy(this.model, 'uid', uid));
  }

  findByUserCode(userCode: string): Promise<Payload | undefined> {
    return Promise.resolve(this.ctx.store.findBy(this.model, 'userCode', userCode));
  }

  consume(id: string): Promise<void> {
    const { store, graceMs, requests, invalidGrant } = this.ctx;
    const entry = store.get(this.model, id);
    const now = Date.now();
    if (!entry) {
      // Revoked or expired between lookup and consumption.
      return Promise.reject(invalidGrant('refresh token not found'));
    }
    if (entry.consumedAtMs === undefined) {
      entry.consumedAtMs = now;
      entry.payload.consumed = Math.floor(now / 1000);
      return Promise.resolve();
    }
    // The grace window stays anchored at the first consumption.
    if (this.model !== 'RefreshToken' || now - entry.consumedAtMs < graceMs) return Promise.resolve();

    // Another request consumed this token after our lookup: a concurrent presentation outside the
    // grace window is a reuse, and a server with atomic consumption revokes the family.
    const record = requests.getStore();
    if (record) {
      record.presented = 'reused';
      record.revokedFamily = true;
    }
    if (entry.payload.grantId) store.revokeGrant(entry.payload.grantId);
    return Promise.reject(invalidGrant('refresh token already used'));
  }

  destroy(id: string): Promise<void> {
    this.ctx.store.delete(this.model, id);
    return Promise.resolve();
  }

  revokeByGrantId(grantId: string): Promise<void> {
    this.ctx.store.revokeByGrantId(grantId, this.model);
    return Promise.resolve();
  }
}
