/// <reference types="vitest/config" />
import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The built page ships inside the Python package: the server serves
// static/index.html at "/" and static/assets/* at "/assets/*".
const outDir = fileURLToPath(new URL("../src/tokenrelay/server/static", import.meta.url));

// `vite build` takes the libraries as they are published (their dist/, through the workspace's node_modules);
// the dev server and the tests take their sources, so neither needs a build first.
const sources = {
  "@tokenrelay/client": fileURLToPath(new URL("packages/client/src/index.ts", import.meta.url)),
  "@tokenrelay/react": fileURLToPath(new URL("packages/react/src/index.ts", import.meta.url)),
};

export default defineConfig(({ command }) => ({
  // Relative asset URLs keep the page working when the server is mounted
  // under a path prefix behind a proxy.
  base: "./",
  plugins: [react()],
  resolve: { alias: command === "serve" ? sources : {} },
  build: {
    outDir,
    // outDir is outside the Vite root, so Vite only empties it when told to.
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    target: "es2022",
  },
  server: {
    // `npm run dev` talks to a locally running `python -m tokenrelay serve`.
    proxy: {
      "/api": process.env.TOKENRELAY_URL ?? "http://127.0.0.1:8000",
    },
  },
  test: {
    include: ["test/**/*.test.{ts,tsx}", "packages/*/test/**/*.test.{ts,tsx}"],
    environment: "node",
    restoreMocks: true,
  },
}));
