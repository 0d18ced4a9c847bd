/**
 * The code's shape, checked like the Python side's (tests/test_shape.py):
 * every module of the page (src/) and of the libraries (packages/* /src) is
 * at most 400 lines and every function in them fits on a screen. Functions
 * nested in another count towards it, so a long closure cannot hide its
 * length in small helpers.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const WEB = fileURLToPath(new URL("..", import.meta.url));
const PACKAGES = join(WEB, "packages");
const ROOTS = [
  join(WEB, "src"),
  ...readdirSync(PACKAGES).map((name) => join(PACKAGES, name, "src")).filter((dir) => existsSync(dir)),
];
const MAX_MODULE_LINES = 400;
const MAX_FUNCTION_LINES = 60;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sources(path);
    return /\.tsx?$/.test(entry.name) ? [path] : [];
  });
}

function functionName(node: ts.FunctionLikeDeclaration): string {
  if (node.name !== undefined) return node.name.getText();
  const parent = node.parent;
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) {
    return parent.name.getText();
  }
  return "<anonymous>";
}

/** "name (N lines)" for each function longer than the limit. */
function longFunctions(path: string): string[] {
  const file = ts.createSourceFile(path, readFileSync(path, "utf8"), ts.ScriptTarget.Latest, true);
  const long: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && "body" in node && node.body !== undefined) {
      const first = file.getLineAndCharacterOfPosition(node.getStart(file)).line;
      const last = file.getLineAndCharacterOfPosition(node.getEnd()).line;
      const lines = last - first + 1;
      if (lines > MAX_FUNCTION_LINES) long.push(`${functionName(node as ts.FunctionLikeDeclaration)} (${lines} lines)`);
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return long;
}

const modules = ROOTS.flatMap(sources).map((path) => [relative(WEB, path), path] as const);

describe("web sources shape", () => {
  it("finds the page's and both libraries' sources", () => {
    const names = modules.map(([name]) => name);
    expect(names).toContain(join("src", "app", "App.tsx"));
    expect(names).toContain(join("packages", "client", "src", "chatStore.ts"));
    expect(names).toContain(join("packages", "react", "src", "useStreamingChat.ts"));
  });

  it.each(modules)("%s: no function over 60 lines", (_, path) => {
    expect(longFunctions(path)).toEqual([]);
  });

  it.each(modules)("%s: at most 400 lines", (_, path) => {
    expect(readFileSync(path, "utf8").split("\n").length - 1).toBeLessThanOrEqual(MAX_MODULE_LINES);
  });
});
