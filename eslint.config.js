// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import boundaries from './eslint.boundaries.js';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'eslint.config.js', 'eslint.boundaries.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    // The Node-RED palette: CommonJS as Node-RED loads it, outside the TypeScript project.
    files: ['rules/node-red/**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { require: 'readonly', module: 'writable' },
      parserOptions: { projectService: false, project: false },
    },
    rules: { ...tseslint.configs.disableTypeChecked.rules, '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // The status page's script: plain browser JavaScript, served as it is (no build step).
    files: ['runtime/http/status-page/**/*.js'],
    languageOptions: {
      sourceType: 'script',
      globals: { window: 'readonly', document: 'readonly', sessionStorage: 'readonly', fetch: 'readonly', Node: 'readonly', AbortController: 'readonly', TextDecoderStream: 'readonly', setTimeout: 'readonly' },
      parserOptions: { projectService: false, project: false },
    },
    rules: tseslint.configs.disableTypeChecked.rules,
  },
  // The rooms and their one-way arrows (docs/architecture.md).
  ...boundaries,
);
