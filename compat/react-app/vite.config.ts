/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// An ordinary Vite + React app: @tokenrelay/client and @tokenrelay/react come from node_modules, installed from the
// tarballs `npm pack` made (nothing here points at the workspace's sources).
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true },
  test: {
    include: ["test/**/*.test.{ts,tsx}"],
    environment: "node",
    // One real tokenrelay server for the suite; its files run one after another so that /api/health's counts
    // belong to the test reading them.
    globalSetup: ["./test/globalSetup.ts"],
    fileParallelism: false,
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
});
