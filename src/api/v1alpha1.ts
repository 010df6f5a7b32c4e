// The OAuthConnection API as the controller sees it. Field types come from the CRD's schema
// (v1alpha1.generated.ts); the names here are the ones the rest of the code speaks in.
import type { OAuthConnectionSpec, OAuthConnectionStatus } from './v1alpha1.generated.ts';

export type { OAuthConnectionSpec, OAuthConnectionStatus };

export const GROUP = 'oauth.token-operator.dev';
export const VERSION = 'v1alpha1';
export const KIND = 'OAuthConnection';
export const PLURAL = 'oauthconnections';
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  /** Typed as client-node types it; only its presence is used (custom objects arrive as JSON). */
  deletionTimestamp?: Date;
  finalizers?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export interface OAuthConnection {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: OAuthConnectionSpec;
  status?: OAuthConnectionStatus;
}

export type Provider = OAuthConnectionSpec['provider'];
export type Preset = NonNullable<Provider['preset']>;
export type SecretKeyRef = NonNullable<OAuthConnectionSpec['clientSecretRef']>;
export type GrantType = NonNullable<NonNullable<OAuthConnectionSpec['grant']>['type']>;
export type ClientAuthMethod = NonNullable<OAuthConnectionSpec['clientAuthMethod']>;
export type RecoveryLogin = NonNullable<NonNullable<OAuthConnectionSpec['recovery']>['login']>;
export type LoginFlow = RecoveryLogin['flow'];
export type Condition = NonNullable<OAuthConnectionStatus['conditions']>[number];
