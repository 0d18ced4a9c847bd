// @vitest-environment jsdom
import { cleanup, render } from "@testing-library/react";
import { afterEach, describe, expect, it } from "vitest";
import { parseInline, parseMarkdown } from "../src/markdown/parse";
import { Markdown } from "../src/markdown/render";
import { safeHref } from "../src/markdown/safeUrl";

afterEach(() => {
  cleanup();
});

function html(text: string, streaming = false): HTMLElement {
  const { container } = render(<Markdown text={text} streaming={streaming} cursor={streaming ? <span className="cursor" /> : null} />);
  return container;
}

describe("parseMarkdown", () => {
  it("parses the block structure of a typical answer", () => {
    const blocks = parseMarkdown(
      [
        "# Title",
        "",
        "Intro with **bold**, *em*, `code` and ~~gone~~.",
        "Second line.",
        "",
        "- one",
        "- two",
        "  - nested",
        "",
        "1. first",
        "2. second",
        "",
        "> quoted",
        "",
        "```ts",
        "const x = 1;",
        "```",
        "",
        "| a | b |",
        "|:--|--:|",
        "| 1 | 2 |",
        "",
        "---",
      ].join("\n"),
    );
    expect(blocks.map((block) => block.type)).toEqual(["heading", "paragraph", "list", "list", "blockquote", "code", "table", "hr"]);
    expect(blocks[5]).toEqual({ type: "code", lang: "ts", text: "const x = 1;", closed: true });
    expect(blocks[6]).toMatchObject({ type: "table", align: ["left", "right"] });
    const bullets = blocks[2];
    expect(bullets).toMatchObject({ type: "list", ordered: false, tight: true });
    if (bullets?.type === "list") expect(bullets.items[1]?.map((block) => block.type)).toEqual(["paragraph", "list"]);
  });

  it("turns single newlines into line breaks", () => {
    expect(parseInline("a\nb")).toEqual([{ type: "text", text: "a" }, { type: "break" }, { type: "text", text: "b" }]);
  });

  it("keeps literal delimiters that do not form emphasis", () => {
    const container = html("2 * 3 * 4 and snake_case_name and a * b");
    expect(container.textContent).toBe("2 * 3 * 4 and snake_case_name and a * b");
    expect(container.querySelector("em")).toBeNull();
  });

  it("handles nested emphasis and escapes", () => {
    const container = html("**bold *inner* text** and \\*not em\\* and ***both***");
    expect(container.querySelector("strong em")?.textContent).toBe("inner");
    expect(container.textContent).toContain("*not em*");
    expect(container.querySelectorAll("strong").length).toBe(2);
  });

  it("links bare URLs without trailing punctuation", () => {
    const container = html("See https://example.com/path?q=1. Or (https://example.org/x).");
    const links = Array.from(container.querySelectorAll("a"), (link) => link.getAttribute("href"));
    expect(links).toEqual(["https://example.com/path?q=1", "https://example.org/x"]);
  });

  it("renders links safely with rel and target", () => {
    const link = html("[docs](https://example.com/docs \"The docs\")").querySelector("a");
    expect(link?.getAttribute("href")).toBe("https://example.com/docs");
    expect(link?.getAttribute("title")).toBe("The docs");
    expect(link?.getAttribute("rel")).toContain("noopener");
    expect(link?.getAttribute("target")).toBe("_blank");
  });

  it("shows images as links and never loads them", () => {
    const container = html("![a cat](https://example.com/cat.png)");
    expect(container.querySelector("img")).toBeNull();
    expect(container.querySelector("a")?.textContent).toBe("a cat");
  });

  it("copes with pathological input: no deep recursion, no quadratic rescans", () => {
    const inputs = [
      "*a [b `c ".repeat(4000),
      "**a ".repeat(10_000),
      "*a ".repeat(10_000) + "a* ".repeat(10_000),
      "[".repeat(20_000),
      "[a](".repeat(5000),
      "[a](<".repeat(5000),
      '[a](x "'.repeat(5000),
      "`a ".repeat(10_000),
      "> ".repeat(20_000) + "deep",
      "1. ".repeat(20_000) + "deep",
      "- a\n".repeat(5000) + "  ".repeat(5000) + "- b",
      "x ".repeat(50_000) + "*",
    ];
    const started = performance.now();
    for (const text of inputs) {
      parseMarkdown(text, { streaming: true });
      parseMarkdown(text);
    }
    // Linear parsing takes well under a second for all of these; quadratic would take minutes.
    expect(performance.now() - started).toBeLessThan(3000);
  });
});

describe("streaming repair: half-finished Markdown does not flash", () => {
  it("an unclosed code fence is a code block, with the cursor inside", () => {
    const container = html("Here:\n\n```python\nprint('hi')\nfor x in", true);
    const code = container.querySelector("pre code");
    expect(code?.textContent).toBe("print('hi')\nfor x in");
    expect(code?.querySelector(".cursor")).not.toBeNull();
    expect(container.textContent).not.toContain("```");
  });

  it("unclosed emphasis, strong, strikethrough and code render as formatted", () => {
    expect(html("this is **very imp", true).querySelector("strong")?.textContent).toBe("very imp");
    expect(html("this is *somewh", true).querySelector("em")?.textContent).toBe("somewh");
    expect(html("this is ~~wro", true).querySelector("del")?.textContent).toBe("wro");
    expect(html("run `npm ins", true).querySelector("code")?.textContent).toBe("npm ins");
  });

  it("a trailing delimiter run is hidden until its content arrives", () => {
    expect(html("Hello **", true).textContent).toBe("Hello ");
    expect(html("Hello `", true).textContent).toBe("Hello ");
    expect(html("Hello\n\n``", true).textContent).toBe("Hello");
  });

  it("an unfinished link shows its text, not the syntax", () => {
    const container = html("read [the guide](https://exam", true);
    expect(container.textContent).toBe("read the guide");
    expect(container.querySelector("a")).toBeNull();
  });

  it("the same text renders literally once the answer is finished", () => {
    expect(html("5 **not closed").textContent).toBe("5 **not closed");
    expect(html("5 **not closed").querySelector("strong")).toBeNull();
  });

  it("every prefix of a rich answer renders without raw fence or emphasis markers", () => {
    const answer = "## Steps\n\n1. Install with `npm i`\n2. Run **the build**\n\n```sh\nnpm run build\n```\n\nDone *now*.";
    for (let end = 1; end <= answer.length; end += 1) {
      const container = html(answer.slice(0, end), true);
      const text = container.textContent ?? "";
      expect({ end, text, hasFence: text.includes("```") }).toMatchObject({ end, hasFence: false });
      expect({ end, text, hasStars: text.includes("**") }).toMatchObject({ end, hasStars: false });
      expect(container.querySelectorAll(".cursor").length).toBe(1);
      cleanup();
    }
  });
});

describe("safeHref", () => {
  it("allows http, https and mailto only", () => {
    expect(safeHref("https://example.com/a")).toBe("https://example.com/a");
    expect(safeHref("http://example.com")).toBe("http://example.com/");
    expect(safeHref("mailto:a@example.com")).toBe("mailto:a@example.com");
    for (const bad of [
      "javascript:alert(1)",
      "JAVASCRIPT:alert(1)",
      " javascript:alert(1)",
      "java\tscript:alert(1)",
      "java\nscript:alert(1)",
      "\u0000javascript:alert(1)",
      "data:text/html,<script>alert(1)</script>",
      "vbscript:msgbox(1)",
      "file:///etc/passwd",
      "//evil.example/x",
      "/api/chat/stream?message=hi",
      "&#106;avascript:alert(1)",
      "",
    ]) {
      expect({ bad, href: safeHref(bad) }).toEqual({ bad, href: null });
    }
  });
});

/** Model output trying to run code in the page. */
const XSS_CORPUS = [
  `<img src=x onerror="window.__xss=1">`,
  `<script>window.__xss=1</script>`,
  `<svg onload="window.__xss=1">`,
  `<svg><script>window.__xss=1</script></svg>`,
  `<iframe src="javascript:window.__xss=1"></iframe>`,
  `<a href="javascript:window.__xss=1">click</a>`,
  `<a href="&#x6A;avascript:window.__xss=1">click</a>`,
  `<details open ontoggle="window.__xss=1">`,
  `<body onload="window.__xss=1">`,
  `<input autofocus onfocus="window.__xss=1">`,
  `<object data="javascript:window.__xss=1"></object>`,
  `<embed src="javascript:window.__xss=1">`,
  `<math><mtext><table><mglyph><style><img src=x onerror="window.__xss=1">`,
  `<style>body{display:none}</style>`,
  `<base href="javascript:/">`,
  `<meta http-equiv="refresh" content="0;url=javascript:window.__xss=1">`,
  `[click me](javascript:window.__xss=1)`,
  `[click me](JaVaScRiPt:window.__xss=1)`,
  `[click me](java\tscript:window.__xss=1)`,
  `[click me](  javascript:window.__xss=1)`,
  `[click me](<javascript:window.__xss=1>)`,
  `[click me](&#106;avascript:window.__xss=1)`,
  `[click me](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX194c3M9MTwvc2NyaXB0Pg==)`,
  `[click me](vbscript:msgbox(1))`,
  `[click me](https://example.com "title\\" onmouseover=\\"window.__xss=1")`,
  `![x](javascript:window.__xss=1)`,
  `![x](https://example.com/x.png" onerror="window.__xss=1)`,
  `<javascript:window.__xss=1>`,
  `\`<img src=x onerror="window.__xss=1">\``,
  "```html\n<script>window.__xss=1</script>\n```",
  `**<img src=x onerror="window.__xss=1">**`,
  `| <script>window.__xss=1</script> | b |\n|---|---|\n| <img src=x onerror=window.__xss=1> | d |`,
  `> <svg/onload=window.__xss=1>`,
  `- <iframe srcdoc="<script>window.__xss=1</script>">`,
  `https://example.com/<script>window.__xss=1</script>`,
  `[<img src=x onerror=window.__xss=1>](https://example.com)`,
];

const ALLOWED_TAGS = new Set([
  "DIV", "P", "BR", "STRONG", "EM", "DEL", "CODE", "PRE", "A", "SPAN", "UL", "OL", "LI", "BLOCKQUOTE", "HR",
  "H1", "H2", "H3", "H4", "H5", "H6", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "BUTTON",
]);
const ALLOWED_ATTRIBUTES = new Set(["href", "title", "target", "rel", "class", "style", "start", "type"]);

function assertSafe(container: HTMLElement, label: string): void {
  for (const element of Array.from(container.querySelectorAll("*"))) {
    expect({ label, tag: element.tagName, allowed: ALLOWED_TAGS.has(element.tagName) }).toMatchObject({ allowed: true });
    for (const attribute of Array.from(element.attributes)) {
      expect({ label, attribute: attribute.name, allowed: ALLOWED_ATTRIBUTES.has(attribute.name) }).toMatchObject({ allowed: true });
      if (attribute.name === "style") expect(attribute.value).toMatch(/^text-align: (left|right|center);$/);
    }
    if (element.tagName === "A") {
      expect({ label, href: element.getAttribute("href") }).toMatchObject({ href: expect.stringMatching(/^(https?:\/\/|mailto:)/) });
    }
  }
  expect((window as unknown as { __xss?: unknown }).__xss).toBeUndefined();
}

describe("XSS corpus", () => {
  for (const payload of XSS_CORPUS) {
    it(`renders safely: ${JSON.stringify(payload).slice(0, 70)}`, () => {
      const finished = html(`Answer: ${payload}`);
      assertSafe(finished, "finished");
      // Raw HTML is shown as text, never interpreted.
      if (payload.startsWith("<") && !payload.startsWith("<javascript:")) expect(finished.textContent).toContain(payload.split(/\s/)[0]);
      cleanup();
      // Every half-received state is just as safe.
      for (let end = 1; end <= payload.length; end += 1) {
        assertSafe(html(payload.slice(0, end), true), `prefix ${end}`);
        cleanup();
      }
    });
  }
});
