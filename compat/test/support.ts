// What every compat suite shares: a real tokenrelay server (the repository's Python package, from its virtualenv) on
// a free port, which each suite's globalSetup starts with its own flags, and a poll for the tests. Used by the AI SDK
// suite (this folder, which compat/aisdk and compat/aisdk7 link as their test/), compat/agui and compat/react-app.
// It lives in this folder rather than in compat/ itself because vitest loads a globalSetup file by its real path and
// TypeScript through the link: "./support" is the one import from here that both resolve alike. It imports only
// Node's own modules, since each suite compiles it with its own node_modules and tsconfig.
import { type ChildProcess, spawn } from "node:child_process";
import { realpathSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository: this file is its compat/test/support.ts. */
export const root = resolve(dirname(realpathSync(fileURLToPath(import.meta.url))), "../..");

const READY_WITHIN_MS = 30_000;
const STOP_WITHIN_MS = 5_000;

export type Tokenrelay = {
  url: string;
  /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
  stop: () => Promise<void>;
};

export type ServeOptions = {
  /** `tokenrelay serve` flags after `--backend synthetic`; the port and `--log-level warning` are added. */
  args: string[];
  /** Variables set over this process's environment. */
  env?: Record<string, string>;
  /** What runs tokenrelay: by default the virtualenv's Python (or $TOKENRELAY_PYTHON) with `-m tokenrelay`. */
  command?: string[];
};

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
  const deadline = Date.now() + READY_WITHIN_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`tokenrelay exited with ${child.exitCode}:\n${log()}`);
    try {
      if ((await fetch(`${url}/api/health`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`tokenrelay did not answer /api/health within ${READY_WITHIN_MS / 1000} s:\n${log()}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, STOP_WITHIN_MS))]);
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

/** `tokenrelay serve --backend synthetic` on a free port, started from the repository, once it answers /api/health. */
export async function startTokenrelay({ args, env = {}, command }: ServeOptions): Promise<Tokenrelay> {
  const port = await freePort();
  const [program, ...prefix] = command ?? [
    process.env.TOKENRELAY_PYTHON ?? resolve(root, ".venv/bin/python"),
    "-m",
    "tokenrelay",
  ];
  if (program === undefined) throw new Error("an empty command");
  let output = "";
  const child = spawn(
    program,
    [...prefix, "serve", "--backend", "synthetic", ...args, "--port", String(port), "--log-level", "warning"],
    { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitForHealth(url, child, () => output);
  } catch (error) {
    await stopChild(child);
    throw error;
  }
  return { url, stop: () => stopChild(child) };
}

/** Poll until `check` passes (it throws while it does not), or fail after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}
