// Starts two real tokenrelay servers on free ports, with the synthetic backend replaying test/script.json: one where
// a dropped connection detaches (the run waits for a resume), one where it cancels the run. Their URLs reach the
// tests as inject("detachUrl") / inject("cancelUrl").
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";
import { startTokenrelay } from "../../test/support";

const script = fileURLToPath(new URL("script.json", import.meta.url));

declare module "vitest" {
  export interface ProvidedContext {
    detachUrl: string;
    cancelUrl: string;
  }
}

function serve(onDisconnect: "detach" | "cancel") {
  return startTokenrelay({
    args: ["--synthetic-script", script],
    // In-memory history and runs: the suite leaves nothing behind.
    env: { TOKENRELAY_HISTORY: "memory", TOKENRELAY_STORE: "memory", TOKENRELAY_ON_DISCONNECT: onDisconnect },
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [detach, cancel] = await Promise.all([serve("detach"), serve("cancel")]);
  project.provide("detachUrl", detach.url);
  project.provide("cancelUrl", cancel.url);
  return async () => {
    await Promise.all([detach.stop(), cancel.stop()]);
  };
}
