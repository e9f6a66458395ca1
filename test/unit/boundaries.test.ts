import { ESLint } from 'eslint';
import { fileURLToPath } from 'node:url';
import tseslint from 'typescript-eslint';
import { describe, expect, it } from 'vitest';
import boundaries from '../../eslint.boundaries.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** The project's boundary rules alone (no type information needed), on a file that is not on disk. */
const eslint = new ESLint({
  cwd: root,
  overrideConfigFile: true,
  overrideConfig: [{ files: ['**/*.ts'], languageOptions: { parser: tseslint.parser } }, ...boundaries],
});

async function problems(file: string, source: string): Promise<string[]> {
  const [result] = await eslint.lintText(source, { filePath: `${root}/${file}` });
  return (result?.messages ?? []).map((m) => `${m.ruleId ?? 'parse'}: ${m.message}`);
}

describe('room boundaries (lint)', () => {
  it('refuses a driver that imports the runtime beyond its contracts, or another room', async () => {
    expect(await problems('drivers/modbus/probe.ts', "import { Gateway } from '../../runtime/gateway.js';\n")).toEqual([
      expect.stringMatching(/^no-restricted-imports: .*only through runtime\/contracts/),
    ]);
    expect(await problems('drivers/modbus/probe.ts', "import { Rules } from '../../rules/engine.js';\n")).toEqual([expect.stringMatching(/another room/)]);
    expect(await problems('drivers/probe.ts', "export { SqliteOutbox } from '../cloud-bridge/outbox.js';\n")).toEqual([expect.stringMatching(/another room/)]);
  });

  it('lets every room import runtime/contracts and its own files', async () => {
    for (const [file, from] of [
      ['drivers/modbus/probe.ts', '../../runtime/contracts/index.js'],
      ['drivers/modbus/probe.ts', './codec.js'],
      ['rules/probe.ts', '../runtime/contracts/match.js'],
      ['cloud-bridge/probe.ts', './outbox.js'],
      ['ota/ddi/probe.ts', '../../runtime/contracts/index.js'],
      ['ota/ddi/probe.ts', '../rollout.js'],
      ['sim/ota/probe.ts', '../../runtime/contracts/index.js'],
    ] as const) {
      expect(await problems(file, `import type { X } from '${from}';\n`), `${file} → ${from}`).toEqual([]);
    }
  });

  it('keeps OTA, the rules and the cloud bridge out of each other', async () => {
    expect(await problems('ota/probe.ts', "import { fetchArtifact } from '../cloud-bridge/artifact-fetch.js';\n")).toHaveLength(1);
    expect(await problems('ota/ddi/probe.ts', "import type { Db } from '../../runtime/store/database.js';\n")).toHaveLength(1);
    expect(await problems('rules/probe.ts', "import { compileGlob } from '../ota/release-store.js';\n")).toHaveLength(1);
    expect(await problems('cloud-bridge/probe.ts', "import { ChildIntake } from '../drivers/mqtt/child-intake.js';\n")).toHaveLength(1);
  });

  it('keeps the contracts free of everything else', async () => {
    expect(await problems('runtime/contracts/probe.ts', "import type { SiteConfig } from '../config/schema.js';\n")).toHaveLength(1);
    expect(await problems('runtime/contracts/probe.ts', "import { idSchema } from './config.js';\n")).toEqual([]);
  });

  it('lets only the demo and sim verbs import the simulator, and the simulator only the contracts', async () => {
    expect(await problems('runtime/gateway-probe.ts', "import { SimSite } from '../sim/site.js';\n")).toEqual([expect.stringMatching(/only the demo and sim verbs/)]);
    expect(await problems('ota/probe.ts', "import { DdiDevice } from '../sim/ota/ddi-device.js';\n")).toHaveLength(1);
    expect(await problems('runtime/demo.ts', "import { SimSite } from '../sim/site.js';\n")).toEqual([]);
    expect(await problems('sim/probe.ts', "import { Gateway } from '../runtime/gateway.js';\n")).toEqual([expect.stringMatching(/public contracts/)]);
    expect(await problems('sim/ota/probe.ts', "import { ReleaseStore } from '../../ota/release-store.js';\n")).toHaveLength(1);
  });

  it('passes the tree as it is', async () => {
    const results = await eslint.lintFiles(['runtime', 'drivers', 'rules', 'cloud-bridge', 'ota', 'sim']);
    const found = results.flatMap((r) => r.messages.map((m) => `${r.filePath.slice(root.length)}:${m.line}: ${m.message}`));
    expect(found).toEqual([]);
  });
});
