// @ts-check
/**
 * The rooms of the house and their one-way arrows (docs/architecture.md), as lint rules:
 * - drivers/, rules/, cloud-bridge/ and ota/ import runtime/contracts and themselves, nothing else
 *   of the gateway;
 * - runtime/contracts imports only itself;
 * - sim/ (a simulated site and cloud) imports only runtime/contracts;
 * - nothing of the gateway imports sim/, bench/ or test/, but the CLI's demo and sim verbs (runtime/demo.ts, runtime/sim-cli.ts), loaded only when run;
 * - nothing imports bench/ or test/ but bench/ and test/.
 * Imports are relative paths; a regex over the path catches any depth of `../`.
 */

const UP = String.raw`^(\.\./)+`;
/** An import leaving its room through `../` into one of `rooms`. */
const into = (/** @type {string[]} */ rooms, /** @type {string} */ message) => ({
  regex: `${UP}(${rooms.join('|')})(/|$)`,
  message,
});
/** runtime/ except runtime/contracts. */
const RUNTIME = String.raw`runtime(?!/contracts(/|$))`;

/** @param {string} room @param {string[]} others */
const room = (room, others) => ({
  files: [`${room}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          into([RUNTIME], `${room}/ may use the gateway only through runtime/contracts`),
          into(others, `${room}/ must not depend on another room; share through runtime/contracts`),
          into(['sim', 'bench', 'test'], `${room}/ is part of the gateway: it must not import sim/, bench/ or test/`),
        ],
      },
    ],
  },
});

/** @type {import('eslint').Linter.Config[]} */
export default [
  room('drivers', ['rules', 'cloud-bridge', 'ota']),
  room('rules', ['drivers', 'cloud-bridge', 'ota']),
  room('cloud-bridge', ['drivers', 'rules', 'ota']),
  room('ota', ['drivers', 'rules', 'cloud-bridge']),
  {
    files: ['runtime/contracts/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: String.raw`^\.\./`, message: 'runtime/contracts imports nothing but itself: the other rooms depend on it' }] }],
    },
  },
  {
    files: ['runtime/**/*.ts'],
    ignores: ['runtime/contracts/**', 'runtime/demo.ts', 'runtime/sim-cli.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [into(['sim', 'bench', 'test'], 'only the demo and sim verbs (runtime/demo.ts, runtime/sim-cli.ts) start simulated devices; the gateway never imports sim/, bench/ or test/')] }],
    },
  },
  {
    files: ['runtime/demo.ts', 'runtime/sim-cli.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [into(['bench', 'test'], 'the demo may use sim/, not bench/ or test/')] }],
    },
  },
  {
    files: ['sim/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [into([RUNTIME, 'drivers', 'rules', 'cloud-bridge', 'ota', 'bench', 'test'], 'sim/ is a site and a cloud: it speaks the public contracts (runtime/contracts) only')] },
      ],
    },
  },
];
