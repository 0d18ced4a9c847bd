// Starts the real tokenrelay server (the repository's Python package, from its virtualenv) on a free port, with the
// synthetic backend replaying test/script.json, and hands its URL to the tests as inject("baseUrl").
import { type ChildProcess, spawn } from "node:child_process";
import { realpathSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

// This file lives in compat/test, reached through each package's test/ link: the repository is two folders up.
const here = dirname(realpathSync(fileURLToPath(import.meta.url)));
const root = resolve(here, "../..");
const script = join(here, "script.json");

declare module "vitest" {
  export interface ProvidedContext {
    baseUrl: string;
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
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`tokenrelay exited with ${child.exitCode}:\n${log()}`);
    try {
      const response = await fetch(`${url}/api/health`);
      if (response.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`tokenrelay did not answer /api/health within 20 s:\n${log()}`);
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const port = await freePort();
  const python = process.env.TOKENRELAY_PYTHON ?? join(root, ".venv/bin/python");
  let output = "";
  const child = spawn(
    python,
    ["-m", "tokenrelay", "serve", "--backend", "synthetic", "--synthetic-script", script, "--port", String(port),
      "--log-level", "warning"],
    {
      cwd: root,
      // In-memory history: the suite leaves no database behind. A dropped connection detaches (the run waits for a
      // resume), so a Stop has to be the explicit cancel that the suite shows.
      env: { ...process.env, TOKENRELAY_HISTORY: "memory", TOKENRELAY_STORE: "memory", TOKENRELAY_ON_DISCONNECT: "detach" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  await waitForHealth(url, child, () => output);
  project.provide("baseUrl", url);
  return async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
    if (child.exitCode === null) child.kill("SIGKILL");
  };
}
