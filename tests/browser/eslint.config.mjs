// Lints the wall dashboard's modules (web/app) and these tests. Run by tests/tests/browser.rs
// before the browser tests, from the workspace root:
//   tests/browser/node_modules/.bin/eslint -c tests/browser/eslint.config.mjs web/app tests/browser/*.mjs
import js from '@eslint/js';

const browser = Object.fromEntries(['window', 'document', 'location', 'localStorage', 'navigator', 'fetch', 'console', 'setTimeout', 'setInterval',
  'clearInterval', 'clearTimeout', 'requestAnimationFrame', 'getComputedStyle', 'URL', 'URLSearchParams', 'WebSocket', 'Intl', 'Option', 'Event',
  'MouseEvent', 'KeyboardEvent', 'ResizeObserver', 'AudioContext', 'HTMLElement', 'HTMLInputElement', 'HTMLSelectElement', 'HTMLButtonElement',
  'HTMLTemplateElement', 'Element', 'NodeFilter', 'PerformanceObserver', 'performance', 'Blob', 'Worker', 'OffscreenCanvas', 'self'].map((g) => [g, 'readonly']));
const node = Object.fromEntries(['process', 'console', 'setTimeout', 'setInterval', 'clearInterval', 'URL', 'Buffer'].map((g) => [g, 'readonly']));

export default [
  js.configs.recommended,
  {
    files: ['web/app/**/*.js'],
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { ...browser, L: 'readonly', uPlot: 'readonly' } },
    rules: {
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' }],
      'no-restricted-properties': ['error', { property: 'innerHTML', message: 'build elements from <template>s or with textContent' }],
      eqeqeq: 'error',
      'prefer-const': 'error',
    },
  },
  {
    files: ['tests/browser/*.mjs', 'tests/browser/unit/*.mjs'],
    languageOptions: { ecmaVersion: 2023, sourceType: 'module', globals: { ...node, ...browser } },
    rules: { 'no-unused-vars': ['error', { argsIgnorePattern: '^_' }] },
  },
];
