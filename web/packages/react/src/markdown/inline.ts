/**
 * Inline parsing: a paragraph's text in, inline nodes out, one function per
 * construct (escape, line break, code span, emphasis, link, autolink, bare
 * URL). Each is called at the character that may start it and returns the
 * index after what it consumed; plain text accumulates in between.
 */
import { safeHref } from "./safeUrl.js";
import {
  findBracketClose,
  findCodeClose,
  findDelimiterClose,
  parseLinkTarget,
  runLength,
  WHITESPACE,
  WORD_CHAR,
  type InlineContext,
} from "./inlineScan.js";
import type { Inline } from "./tree.js";

const ESCAPABLE = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/;
const AUTOLINK = /^<([a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>/;
const BARE_URL = /^https?:\/\/[^\s<>]+/;
const TRAILING_DELIMITERS = /[*_~`]+$/;

/**
 * Formatting nested deeper than this is shown as literal text. Real answers
 * nest two or three levels; the cap keeps adversarial input such as
 * "**a **a **a ..." (each opener unclosed) from recursing thousands of
 * levels deep and overflowing the stack.
 */
const MAX_NESTING = 16;

/** The nodes of one range, with the text that has not become a node yet. */
class Nodes {
  readonly list: Inline[] = [];
  text = "";

  push(node: Inline): void {
    this.flush();
    this.list.push(node);
  }

  finish(): Inline[] {
    this.flush();
    return this.list;
  }

  private flush(): void {
    if (this.text !== "") {
      this.list.push({ type: "text", text: this.text });
      this.text = "";
    }
  }
}

/** The range [.., end) being parsed, and how. */
interface Range {
  readonly context: InlineContext;
  readonly end: number;
  /** The text may be cut off here (streaming): unfinished constructs render as finished. */
  readonly open: boolean;
  readonly depth: number;
  readonly nodes: Nodes;
}

function escape(range: Range, index: number): number {
  const { src } = range.context;
  const next = src.charAt(index + 1);
  if (index + 1 < range.end && next === "\n") {
    range.nodes.push({ type: "break" });
    return index + 2;
  }
  if (index + 1 < range.end && ESCAPABLE.test(next)) {
    range.nodes.text += next;
    return index + 2;
  }
  range.nodes.text += "\\";
  return index + 1;
}

function lineBreak(range: Range, index: number): number {
  range.nodes.text = range.nodes.text.replace(/ +$/, "");
  range.nodes.push({ type: "break" });
  return index + 1;
}

function codeSpan(range: Range, index: number): number {
  const { context, end, nodes } = range;
  const { src } = context;
  const run = runLength(src, index, end, "`");
  const close = findCodeClose(context, index + run, end, run);
  if (close === -1 && !range.open) {
    nodes.text += "`".repeat(run);
    return index + run;
  }
  let code = src.slice(index + run, close === -1 ? end : close).replace(/\n/g, " ");
  // One space of padding on both sides is syntax, so `` `x` `` can show backticks.
  if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim() !== "") code = code.slice(1, -1);
  nodes.push({ type: "code", text: code });
  return close === -1 ? end : close + run;
}

function emphasisNode(char: string, length: number, children: Inline[]): Inline {
  if (char === "~") return { type: "del", children };
  if (length === 3) return { type: "strong", children: [{ type: "em", children }] };
  return { type: length === 2 ? "strong" : "em", children };
}

/** A run of `*`, `_` or `~`: emphasis if it opens one that closes (or, streaming, may still close), else text. */
function emphasis(range: Range, index: number, char: string): number {
  const { context, end, depth } = range;
  const { src } = context;
  const run = runLength(src, index, end, char);
  const before = index > 0 ? src.charAt(index - 1) : "";
  const after = index + run < end ? src.charAt(index + run) : "";
  const canOpen =
    depth < MAX_NESTING &&
    after !== "" && !WHITESPACE.test(after) && (char !== "_" || !WORD_CHAR.test(before)) && (char !== "~" || run === 2);
  if (canOpen) {
    const next = openEmphasis(range, index, char, run, before);
    if (next !== -1) return next;
  }
  range.nodes.text += char.repeat(run);
  return index + run;
}

function openEmphasis(range: Range, index: number, char: string, run: number, before: string): number {
  const { context, end, depth, nodes } = range;
  const lengths = char === "~" ? [2] : run >= 3 ? [3, 2, 1] : run === 2 ? [2, 1] : [1];
  const contentStart = index + run;
  for (const length of lengths) {
    const close = findDelimiterClose(context, contentStart, end, char, length);
    if (close === -1) continue;
    // Opener characters beyond `length` stay literal.
    nodes.text += char.repeat(run - length);
    nodes.push(emphasisNode(char, length, parseRange(context, contentStart, close, false, depth + 1)));
    return close + length;
  }
  if (range.open && !WORD_CHAR.test(before)) {
    // Streaming: the closing delimiter has not arrived yet.
    const length = lengths[0] as number;
    nodes.text += char.repeat(run - length);
    nodes.push(emphasisNode(char, length, parseRange(context, contentStart, end, true, depth + 1)));
    return end;
  }
  return -1;
}

/** `[label](target)`, or `![alt](target)`, shown as a link too. */
function link(range: Range, index: number, image: boolean): number {
  const { context, end, depth, nodes } = range;
  const { src } = context;
  const labelStart = index + (image ? 2 : 1);
  const close = findBracketClose(context, labelStart, end);
  if (close !== -1 && src.charAt(close + 1) === "(") {
    const target = parseLinkTarget(src, close + 1, end);
    if (target !== null && target !== "unfinished") {
      // Images are shown as links: loading arbitrary URLs from model
      // output would leak the reader's IP address and allow tracking.
      const label = image
        ? [{ type: "text", text: src.slice(labelStart, close) || "image" } as Inline]
        : parseRange(context, labelStart, close, false, depth + 1);
      nodes.push({ type: "link", href: safeHref(target.href), title: target.title, children: label });
      return target.next;
    }
    if (target === "unfinished" && range.open) {
      nodes.push({ type: "link", href: null, title: undefined, children: parseRange(context, labelStart, close, false, depth + 1) });
      return end;
    }
  }
  nodes.text += image ? "![" : "[";
  return labelStart;
}

/** `<scheme:...>`, or -1. */
function autolink(range: Range, index: number): number {
  const { src } = range.context;
  const match = AUTOLINK.exec(src.slice(index, Math.min(range.end, index + 2048)));
  if (match === null) return -1;
  const url = match[1] as string;
  range.nodes.push({ type: "link", href: safeHref(url), title: undefined, children: [{ type: "text", text: url }] });
  return index + match[0].length;
}

/** A bare `http(s)://` URL in the text, or -1. */
function bareUrl(range: Range, index: number): number {
  const { src } = range.context;
  if (WORD_CHAR.test(index > 0 ? src.charAt(index - 1) : "")) return -1;
  const match = BARE_URL.exec(src.slice(index, Math.min(range.end, index + 2048)));
  if (match === null) return -1;
  let url = match[0];
  // Trailing punctuation belongs to the sentence, and a ")" only to
  // the URL if the URL opened one.
  for (;;) {
    const last = url.charAt(url.length - 1);
    if (/[.,:;!?"'*_~]/.test(last)) url = url.slice(0, -1);
    else if (last === ")" && (url.match(/\(/g)?.length ?? 0) < (url.match(/\)/g)?.length ?? 0)) url = url.slice(0, -1);
    else break;
  }
  const href = safeHref(url);
  if (href === null || url.length <= "https://".length) return -1;
  range.nodes.push({ type: "link", href, title: undefined, children: [{ type: "text", text: url }] });
  return index + url.length;
}

/** The construct starting at `index`, consumed: the index after it, or -1 if `char` starts none here. */
function construct(range: Range, index: number, char: string): number {
  switch (char) {
    case "\\":
      return escape(range, index);
    case "\n":
      return lineBreak(range, index);
    case "`":
      return codeSpan(range, index);
    case "*":
    case "_":
    case "~":
      return emphasis(range, index, char);
    case "[":
    case "!": {
      const image = char === "!";
      if ((image && range.context.src.charAt(index + 1) !== "[") || range.depth >= MAX_NESTING) return -1;
      return link(range, index, image);
    }
    case "<":
      return autolink(range, index);
    case "h":
      return bareUrl(range, index);
    default:
      return -1;
  }
}

function parseRange(context: InlineContext, start: number, end: number, open: boolean, depth = 0): Inline[] {
  const range: Range = { context, end, open, depth, nodes: new Nodes() };
  const { src } = context;
  let index = start;
  while (index < end) {
    const char = src.charAt(index);
    const next = construct(range, index, char);
    if (next === -1) {
      range.nodes.text += char;
      index += 1;
    } else {
      index = next;
    }
  }
  return range.nodes.finish();
}

/** Parse inline Markdown. `open`: the text may be cut off (streaming). */
export function parseInline(source: string, open = false): Inline[] {
  let src = source;
  // A trailing run of delimiter characters is most likely the start of
  // formatting whose content has not arrived: hide it rather than flash it.
  if (open) src = src.replace(TRAILING_DELIMITERS, "");
  return parseRange({ src, failedFrom: new Map() }, 0, src.length, open);
}
