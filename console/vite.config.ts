import { defineConfig } from "vite";

// The bundle hookrelay embeds and serves at /console/ (see src/http/console.rs).
// Everything is bundled: no CDN, no inline script or style (the CSP forbids them).
export default defineConfig({
  base: "/console/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    reportCompressedSize: false,
  },
});
