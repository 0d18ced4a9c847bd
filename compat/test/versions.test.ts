// Which `ai` and `@ai-sdk/react` this run is testing, and that it runs them on a Node they support: the same tests
// run once per package (compat/aisdk: ai 6, compat/aisdk7: ai 7), each with its own node_modules.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as ai from "ai";
import { describe, expect, it } from "vitest";

type Manifest = { version: string; engines?: { node?: string } };

function manifest(name: string): Manifest {
  return JSON.parse(readFileSync(join(process.cwd(), "node_modules", name, "package.json"), "utf8")) as Manifest;
}

const major = (version: string): number => Number(version.replace(/^[^\d]*/, "").split(".")[0]);

describe("the SDK under test", () => {
  const sdk = manifest("ai");
  const react = manifest("@ai-sdk/react");

  it("is the package's own pair of majors (ai N, @ai-sdk/react N-3)", () => {
    console.info(`ai ${sdk.version}, @ai-sdk/react ${react.version}, node ${process.version}`);
    expect(major(react.version)).toBe(major(sdk.version) - 3);
    // The module the tests import is this package's copy: ai 7 added WebSocketChatTransport.
    expect("WebSocketChatTransport" in ai).toBe(major(sdk.version) >= 7);
  });

  it("runs on a Node that the SDK supports", () => {
    const needed = /^>=\s*(\d+)/.exec(sdk.engines?.node ?? ">=0")?.[1] ?? "0";
    expect(major(process.version)).toBeGreaterThanOrEqual(Number(needed));
  });
});
