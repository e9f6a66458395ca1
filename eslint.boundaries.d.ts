import type { Linter } from 'eslint';

/** The boundary rules of eslint.boundaries.js (for the test that proves they refuse forbidden imports). */
declare const boundaries: Linter.Config[];
export default boundaries;
