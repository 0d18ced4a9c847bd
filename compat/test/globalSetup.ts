// Starts the real tokenrelay server on a free port, with the synthetic backend replaying test/script.json, and hands
// its URL to the tests as inject("baseUrl").
import { realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import { startTokenrelay } from "./support";

const script = join(dirname(realpathSync(fileURLToPath(import.meta.url))), "script.json");

declare module "vitest" {
  export interface ProvidedContext {
    baseUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const server = await startTokenrelay({
    args: ["--synthetic-script", script],
    // In-memory history: the suite leaves no database behind. A dropped connection detaches (the run waits for a
    // resume), so a Stop has to be the explicit cancel that the suite shows.
    env: { TOKENRELAY_HISTORY: "memory", TOKENRELAY_STORE: "memory", TOKENRELAY_ON_DISCONNECT: "detach" },
  });
  project.provide("baseUrl", server.url);
  return server.stop;
}
