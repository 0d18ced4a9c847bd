// Starts two real tokenrelay servers (the repository's Python package, from its virtualenv) on free ports, with the
// synthetic backend replaying test/script.json: one where a dropped connection detaches (the run waits for a
// resume), one where it cancels the run. Their URLs reach the tests as inject("detachUrl") / inject("cancelUrl").
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../../..");
const script = join(here, "script.json");

declare module "vitest" {
  export interface ProvidedContext {
    detachUrl: string;
    cancelUrl: string;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

async function waitForHealth(url: string, child: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`tokenrelay exited with ${child.exitCode}:\n${log()}`);
    try {
      if ((await fetch(`${url}/api/health`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`tokenrelay did not answer /api/health within 30 s:\n${log()}`);
}

async function serve(onDisconnect: "detach" | "cancel"): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const python = process.env.TOKENRELAY_PYTHON ?? join(root, ".venv/bin/python");
  let output = "";
  const child = spawn(
    python,
    ["-m", "tokenrelay", "serve", "--backend", "synthetic", "--synthetic-script", script, "--port", String(port),
      "--log-level", "warning"],
    {
      cwd: root,
      // In-memory history and runs: the suite leaves nothing behind.
      env: { ...process.env, TOKENRELAY_HISTORY: "memory", TOKENRELAY_STORE: "memory", TOKENRELAY_ON_DISCONNECT: onDisconnect },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  await waitForHealth(url, child, () => output);
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    if (child.exitCode === null) child.kill("SIGKILL");
  };
  return { url, stop };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [detach, cancel] = await Promise.all([serve("detach"), serve("cancel")]);
  project.provide("detachUrl", detach.url);
  project.provide("cancelUrl", cancel.url);
  return async () => {
    await Promise.all([detach.stop(), cancel.stop()]);
  };
}
