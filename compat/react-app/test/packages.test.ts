// What `npm pack` ships and what this app got: only dist, package.json and README in each tarball; the installed
// copies are those tarballs (not links to the workspace); the app built from them.
import { execFileSync } from "node:child_process";
import { existsSync, lstatSync, readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const app = fileURLToPath(new URL("..", import.meta.url));
const packs = fileURLToPath(new URL("../../../web/packs/", import.meta.url));
const names = ["client", "react"] as const;

function entries(tarball: string): string[] {
  return execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).split("\n").filter(Boolean).sort();
}

describe.each(names)("@tokenrelay/%s", (name) => {
  const tarball = `${packs}tokenrelay-${name}-0.1.0.tgz`;

  it("packs only dist, package.json and README.md", () => {
    const files = entries(tarball);
    expect(files.filter((file) => !/^package\/(dist\/.+\.(js|d\.ts)|package\.json|README\.md)$/.test(file))).toEqual([]);
    expect(files).toEqual(expect.arrayContaining(["package/dist/index.js", "package/dist/index.d.ts", "package/README.md"]));
    // No sources, tests or page code: every .js has its .d.ts and nothing else.
    const js = files.filter((file) => file.endsWith(".js")).map((file) => file.slice(0, -3));
    expect(files.filter((file) => file.endsWith(".d.ts")).map((file) => file.slice(0, -5))).toEqual(js);
    expect(files.some((file) => /test|app\/|\.tsx?$/.test(file.replace(/\.d\.ts$/, "")))).toBe(false);
  });

  it("is installed from its tarball, as published", () => {
    const installed = `${app}node_modules/@tokenrelay/${name}`;
    expect(lstatSync(installed).isSymbolicLink()).toBe(false);
    expect(readdirSync(installed).sort()).toEqual(["README.md", "dist", "package.json"]);
    const manifest = JSON.parse(readFileSync(`${installed}/package.json`, "utf8")) as Record<string, unknown>;
    expect(manifest.type).toBe("module");
    expect(manifest.exports).toEqual({
      ".": { types: "./dist/index.d.ts", default: "./dist/index.js" },
      "./package.json": "./package.json",
    });
    // The packed manifest is the workspace's own, unchanged.
    const packed = execFileSync("tar", ["-xzOf", tarball, "package/package.json"], { encoding: "utf8" });
    expect(manifest).toEqual(JSON.parse(packed));
  });
});

describe("this app", () => {
  it("takes React from its peer dependency and the client from the react package's dependency", () => {
    const manifest = JSON.parse(readFileSync(`${app}node_modules/@tokenrelay/react/package.json`, "utf8")) as {
      dependencies: Record<string, string>;
      peerDependencies: Record<string, string>;
    };
    expect(manifest.peerDependencies).toEqual({ react: "^18.0.0 || ^19.0.0" });
    expect(manifest.dependencies).toEqual({ "@tokenrelay/client": "0.1.0" });
    // One copy of each: no nested react or client under the react package.
    expect(existsSync(`${app}node_modules/@tokenrelay/react/node_modules`)).toBe(false);
  });

  it("locks the tarballs without an integrity, so that npm ci installs the ones just packed", () => {
    const lock = JSON.parse(readFileSync(`${app}package-lock.json`, "utf8")) as {
      packages: Record<string, { resolved?: string; integrity?: string }>;
    };
    for (const name of names) {
      const entry = lock.packages[`node_modules/@tokenrelay/${name}`];
      expect(entry?.resolved).toBe(`file:../../web/packs/tokenrelay-${name}-0.1.0.tgz`);
      expect(entry?.integrity, `remove the integrity of @tokenrelay/${name} from package-lock.json`).toBeUndefined();
    }
  });

  it("was built by Vite from the installed packages", () => {
    const html = readFileSync(`${app}dist/index.html`, "utf8");
    const script = /<script type="module" crossorigin src="\/(assets\/index-[\w-]+\.js)"><\/script>/.exec(html)?.[1];
    expect(script).toBeDefined();
    const bundle = readFileSync(`${app}dist/${script}`, "utf8");
    // The client's resume path and the hook's store subscription made it into the bundle.
    expect(bundle).toContain("runs/");
    expect(bundle).toContain("Last-Event-ID");
  });
});
