// Starts a real tokenrelay server (the repository's, from its virtualenv, or $TOKENRELAY_BIN) on a free port with the
// synthetic backend, and hands its URL to the tests as inject("baseUrl").
import { join } from "node:path";
import type { TestProject } from "vitest/node";
// The compat suites' shared server starter (Node's own modules only): a file of the checkout, not of the app.
import { root, startTokenrelay } from "../../test/support";

declare module "vitest" {
  export interface ProvidedContext {
    baseUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startTokenrelay({
    command: [process.env.TOKENRELAY_BIN ?? join(root, ".venv/bin/tokenrelay")],
    // 120 words, one every 20 ms: a few seconds of answer, long enough to press Stop in the middle of it.
    args: ["--history", "memory", "--store", "memory", "--synthetic-tokens", "120", "--synthetic-interval-ms", "20"],
  });
  project.provide("baseUrl", server.url);
  return server.stop;
}
