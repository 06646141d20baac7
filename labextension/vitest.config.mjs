import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    environment: 'jsdom',
    include: ['src/**/*.spec.{ts,tsx}'],
    restoreMocks: true,
    setupFiles: ['testing/setup.ts'],
    server: {
      deps: {
        // Published as ES modules with extensionless imports, which Node cannot resolve
        // on its own: let Vite transform them.
        inline: [/@jupyter\/web-components/, /@jupyter\/react-components/]
      }
    }
  }
});
