// The provider presets: one table per provider (presets/), looked up by the name a connection's
// spec.provider.preset gives, for the region spec.provider.region gives.
import type { Preset } from '../api/v1alpha1.ts';
import { TokenError } from '../oauth/index.ts';
import type { PresetTable } from './preset-table.ts';
import { concur } from './presets/concur.ts';
import { exactOnline } from './presets/exact-online.ts';
import { folio } from './presets/folio.ts';
import { generic } from './presets/generic.ts';
import { keycloak } from './presets/keycloak.ts';

export const PRESET_TABLES: Readonly<Record<Preset, PresetTable>> = {
  'exact-online': exactOnline,
  concur,
  keycloak,
  folio,
  generic,
};

/** A preset's table resolved for one region: its endpoints are that region's. */
export type PresetDefaults = Omit<PresetTable, 'regions'> & {
  preset: Preset;
  region?: string;
  tokenURL?: string;
  authorizationURL?: string;
  revocationURL?: string;
};

/** Regions a preset accepts (the first is the default); empty when it has none. */
export function regionsOf(preset: Preset): readonly string[] {
  return Object.keys(PRESET_TABLES[preset].regions ?? {});
}

function unknownRegion(preset: Preset, region: string): TokenError {
  const known = regionsOf(preset);
  return new TokenError({
    code: 'configuration',
    reason: 'UnknownRegion',
    message:
      known.length > 0
        ? `preset ${preset} has no region "${region.slice(0, 32)}"; known regions: ${known.join(', ')}`
        : `preset ${preset} has no regions; remove provider.region`,
  });
}

/**
 * The defaults of a preset for a region (the preset's default region when unset; case and
 * surrounding spaces ignored). Throws TokenError 'configuration' UnknownRegion.
 */
export function presetDefaults(preset: Preset = 'generic', region?: string): PresetDefaults {
  const { regions, ...table } = PRESET_TABLES[preset];
  const wanted = region?.trim().toLowerCase() || undefined;
  if (regions === undefined) {
    if (wanted !== undefined) throw unknownRegion(preset, wanted);
    return { ...table, preset };
  }
  const name = wanted ?? regionsOf(preset)[0] ?? '';
  const endpoints = Object.hasOwn(regions, name) ? regions[name] : undefined;
  if (endpoints === undefined) throw unknownRegion(preset, name);
  return { ...table, preset, region: name, ...endpoints };
}
