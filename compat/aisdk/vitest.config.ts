import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // jsdom for React Testing Library; fetch, streams and AbortController stay Node's own.
    environment: "jsdom",
    // One real server for the whole suite (started in globalSetup); files run one after another so that
    // /api/health's active_runs belongs to the test reading it.
    globalSetup: ["./test/globalSetup.ts"],
    fileParallelism: false,
    testTimeout: 15_000,
    hookTimeout: 30_000,
  },
});
