// Playwright drives the system's Chromium (Debian's `chromium`), never a downloaded one.
// tests/tests/browser.rs starts `sccr demo` and passes its URLs in the environment.
import { execSync } from 'node:child_process';
import { defineConfig } from '@playwright/test';

function chromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  try {
    return execSync('command -v chromium || command -v chromium-browser', { shell: '/bin/sh' }).toString().trim();
  } catch {
    throw new Error('chromium is not installed (apt-get install chromium)');
  }
}

export default defineConfig({
  testDir: '.',
  testMatch: '*.spec.mjs',
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 60_000,
  reporter: [['list']],
  outputDir: process.env.SCCR_PW_OUTPUT || 'test-results',
  use: {
    baseURL: process.env.SCCR_URL || 'http://127.0.0.1:8080',
    headless: true,
    viewport: { width: 1920, height: 1080 },
    launchOptions: { executablePath: chromium(), args: ['--no-sandbox', '--disable-dev-shm-usage'] },
  },
});
