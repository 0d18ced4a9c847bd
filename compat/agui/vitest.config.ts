import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // HttpAgent runs on Node's own fetch and streams: no DOM needed.
    environment: "node",
    // Two real servers for the whole suite (started in globalSetup); files run one after another.
    globalSetup: ["./test/globalSetup.ts"],
    fileParallelism: false,
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
