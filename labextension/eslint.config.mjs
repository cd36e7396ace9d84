// ESLint flat config: typescript-eslint's recommended rules plus a few type-aware rules
// that catch real bugs (unhandled promises). Run via `npm run lint` / `npm run lint:check`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    // lib/ is tsc output; the build also writes ../jupyter_mlx_embed/{labextension,static},
    // which lie outside this folder and are never linted.
    ignores: ['lib/', 'node_modules/', 'style/', '*.tsbuildinfo']
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.ts', 'test/**/*.ts'],
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname
      }
    },
    rules: {
      // node:test's describe/it return promises the runner itself awaits.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test'] }] }
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      eqeqeq: ['error', 'smart'],
      // `export namespace CommandIDs` and the `StatusItem` class + namespace merge (for
      // `StatusItem.IOptions`) are the JupyterLab API convention; JupyterLab's own lint
      // config turns this rule off too.
      '@typescript-eslint/no-namespace': 'off'
    }
  }
);
