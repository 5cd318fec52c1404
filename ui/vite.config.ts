import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The UI is served by `berth server` at `/`; the API lives at `/api/v1` on the same origin.
// During development, `BERTH_API=http://127.0.0.1:8799 npm run dev` proxies the API (and the
// terminal WebSockets) to a running server.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const api = (globalThis as any).process?.env?.BERTH_API || 'http://127.0.0.1:8787';

export default defineConfig({
  base: '/',
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1024 },
  server: { proxy: { '/api': { target: api, changeOrigin: true, ws: true } } },
  test: { environment: 'node', include: ['src/**/*.test.ts', 'src/**/*.test.tsx'] },
} as any);
