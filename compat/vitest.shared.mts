// The suite's settings, the same for every `ai` major it runs against (each package's vitest.config.ts uses them).
import { fileURLToPath } from "node:url";

export const shared = {
  // The tests live once, in compat/test; each package links it as its own test/ and resolves the test files'
  // imports from where the link is, so `ai` and `@ai-sdk/react` are that package's own majors.
  // @tokenrelay/client (its tokenrelayStop) is the workspace's source, as tsconfig.base.json's paths say.
  resolve: {
    preserveSymlinks: true,
    alias: { "@tokenrelay/client": fileURLToPath(new URL("../web/packages/client/src/index.ts", import.meta.url)) },
  },
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
};
