/**
 * A small Markdown parser for chat answers, producing a plain data tree
 * that `render.tsx` turns into React elements.
 *
 * Why not a Markdown library + HTML sanitizer: model output is untrusted,
 * and a tree of known node types rendered as React elements cannot contain
 * raw HTML, event handler attributes or script at all (`<img onerror>`
 * in the text is just text). The only attribute taken from the input is a
 * link's href, which goes through `safeHref`.
 *
 * Why not strict CommonMark: answers arrive a few characters at a time and
 * are re-parsed each frame. With `streaming: true` constructs that are not
 * finished yet are rendered as if they were (an unclosed ``` fence is a
 * code block, `**bold` is bold, a trailing `**` or lone backtick is hidden,
 * `[text](http://exa` is shown as pending link text) so the page does not
 * flash raw syntax that turns into formatting a moment later.
 *
 * Supported: paragraphs (single newlines are line breaks), ATX headings,
 * fenced code, block quotes, bullet and ordered lists (nested by indent),
 * thematic breaks, GFM tables; inline code, strong, emphasis,
 * strikethrough, links, images (shown as links, never loaded), autolinks and
 * bare http(s) URLs, backslash escapes.
 */
import { safeHref } from "./safeUrl";

export type Inline =
  | { readonly type: "text"; readonly text: string }
  | { readonly type: "code"; readonly text: string }
  | { readonly type: "strong" | "em" | "del"; readonly children: Inline[] }
  | {
      readonly type: "link";
      /** null: unsafe or unfinished target, rendered as plain text. */
      readonly href: string | null;
      readonly title: string | undefined;
      readonly children: Inline[];
    }
  | { readonly type: "break" };

export type Align = "left" | "center" | "right" | null;

export type Block =
  | { readonly type: "paragraph"; readonly children: Inline[] }
  | { readonly type: "heading"; readonly level: 1 | 2 | 3 | 4 | 5 | 6; readonly children: Inline[] }
  | { readonly type: "code"; readonly lang: string; readonly text: string; readonly closed: boolean }
  | { readonly type: "blockquote"; readonly children: Block[] }
  | {
      readonly type: "list";
      readonly ordered: boolean;
      readonly start: number;
      readonly tight: boolean;
      readonly items: Block[][];
    }
  | { readonly type: "hr" }
  | {
      readonly type: "table";
      readonly align: Align[];
      readonly head: Inline[][];
      readonly rows: Inline[][][];
    };

export interface ParseOptions {
  /** The text may stop in the middle of a construct: render unfinished syntax as finished. */
  streaming?: boolean;
}

/** A top-level block with the source lines it came from (used to memoize rendering). */
export interface SourceBlock {
  readonly block: Block;
  readonly source: string;
}

// ---------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------

const FENCE_OPEN = /^( {0,3})(`{3,}|~{3,})(.*)$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$/;
const THEMATIC_BREAK = /^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$/;
const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^( {0,3})([-+*]|\d{1,9}[.)])(?=[ \t]|$)([ \t]*)(.*)$/;
const TABLE_DELIMITER = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

interface ListMarker {
  ordered: boolean;
  /** "-", "+", "*", "." or ")": items of one list share it. */
  kind: string;
  start: number;
  /** Column where the item's content starts: continuation lines are indented this far. */
  contentOffset: number;
  content: string;
}

function isBlank(line: string): boolean {
  return line.trim() === "";
}

function leadingSpaces(line: string): number {
  let count = 0;
  while (count < line.length && line.charCodeAt(count) === 0x20) count += 1;
  return count;
}

function matchListItem(line: string): ListMarker | null {
  const match = LIST_ITEM.exec(line);
  if (match === null) return null;
  const indent = (match[1] ?? "").length;
  const marker = match[2] ?? "";
  const spaces = (match[3] ?? "").length;
  const content = match[4] ?? "";
  const ordered = /\d/.test(marker);
  // 1-4 spaces after the marker set the content column; more means the
  // content is itself indented, and the column is marker + 1.
  const gap = content === "" || spaces > 4 ? 1 : spaces;
  return {
    ordered,
    kind: ordered ? marker.slice(-1) : marker,
    start: ordered ? parseInt(marker, 10) : 1,
    contentOffset: indent + marker.length + gap,
    content: spaces > 4 ? " ".repeat(spaces - 1) + content : content,
  };
}

function fenceOpen(line: string): { indent: number; fence: string; info: string } | null {
  const match = FENCE_OPEN.exec(line);
  if (match === null) return null;
  const fence = match[2] ?? "";
  const info = (match[3] ?? "").trim();
  // A backtick fence's info string cannot contain backticks (it would be inline code).
  if (fence.startsWith("`") && info.includes("`")) return null;
  return { indent: (match[1] ?? "").length, fence, info };
}

function isFenceClose(line: string, fence: string): boolean {
  const trimmed = line.trim();
  if (leadingSpaces(line) > 3 || trimmed.length < fence.length) return false;
  const char = fence.charAt(0);
  for (let index = 0; index < trimmed.length; index += 1) {
    if (trimmed.charAt(index) !== char) return false;
  }
  return true;
}

/** Lines that end a paragraph without a blank line before them. */
function interruptsParagraph(line: string): boolean {
  if (THEMATIC_BREAK.test(line) || HEADING.test(line) || QUOTE.test(line) || fenceOpen(line) !== null) return true;
  const item = matchListItem(line);
  // As in CommonMark: an empty item, or an ordered one not starting at 1, does not interrupt.
  return item !== null && item.content.trim() !== "" && (!item.ordered || item.start === 1);
}

/** Split a table row on unescaped pipes, dropping the optional outer pipes. */
function splitRow(line: string): string[] {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  const cells: string[] = [];
  let current = "";
  for (let index = 0; index < text.length; index += 1) {
    const char = text.charAt(index);
    if (char === "\\" && text.charAt(index + 1) === "|") {
      current += "|";
      index += 1;
    } else if (char === "|") {
      cells.push(current.trim());
      current = "";
    } else {
      current += char;
    }
  }
  cells.push(current.trim());
  return cells;
}

function tableStartsAt(lines: string[], index: number): boolean {
  const header = lines[index];
  const delimiter = lines[index + 1];
  if (header === undefined || delimiter === undefined) return false;
  if (!header.includes("|") || !TABLE_DELIMITER.test(delimiter)) return false;
  return splitRow(header).length === splitRow(delimiter).length;
}

function alignment(cell: string): Align {
  const left = cell.startsWith(":");
  const right = cell.endsWith(":");
  if (left && right) return "center";
  if (right) return "right";
  if (left) return "left";
  return null;
}

interface Ranged {
  block: Block;
  from: number;
  to: number;
}

/** Quotes and lists nested deeper than this become paragraphs (bounds recursion on hostile input). */
const MAX_BLOCK_NESTING = 32;

function parseBlockRanges(lines: string[], streaming: boolean, depth = 0): Ranged[] {
  const blocks: Ranged[] = [];
  const count = lines.length;
  let index = 0;

  // Whether the construct ending at `end` (exclusive) reaches the end of the
  // text, i.e. is the one still being streamed.
  const openAt = (end: number) => streaming && end >= count;

  while (index < count) {
    const line = lines[index] as string;
    if (isBlank(line)) {
      index += 1;
      continue;
    }
    const from = index;

    const fence = fenceOpen(line);
    if (fence !== null) {
      const body: string[] = [];
      index += 1;
      let closed = false;
      while (index < count) {
        const current = lines[index] as string;
        if (isFenceClose(current, fence.fence)) {
          closed = true;
          index += 1;
          break;
        }
        // Content lines lose up to the opening fence's indentation.
        body.push(current.slice(Math.min(fence.indent, leadingSpaces(current))));
        index += 1;
      }
      blocks.push({
        block: { type: "code", lang: fence.info.split(/\s+/)[0] ?? "", text: body.join("\n"), closed },
        from,
        to: index,
      });
      continue;
    }

    const heading = HEADING.exec(line);
    if (heading !== null) {
      const raw = (heading[2] ?? "").replace(/(?:^|[ \t]+)#+[ \t]*$/, "");
      index += 1;
      blocks.push({
        block: {
          type: "heading",
          level: (heading[1] ?? "#").length as 1 | 2 | 3 | 4 | 5 | 6,
          children: parseInline(raw, openAt(index)),
        },
        from,
        to: index,
      });
      continue;
    }

    if (THEMATIC_BREAK.test(line)) {
      index += 1;
      blocks.push({ block: { type: "hr" }, from, to: index });
      continue;
    }

    if (depth < MAX_BLOCK_NESTING && QUOTE.test(line)) {
      const inner: string[] = [];
      while (index < count) {
        const current = lines[index] as string;
        if (QUOTE.test(current)) {
          inner.push(current.replace(QUOTE, ""));
        } else if (!isBlank(current) && inner.length > 0 && !isBlank(inner[inner.length - 1] as string) && !interruptsParagraph(current)) {
          // Lazy continuation of a quoted paragraph.
          inner.push(current);
        } else {
          break;
        }
        index += 1;
      }
      blocks.push({
        block: { type: "blockquote", children: parseBlockRanges(inner, openAt(index), depth + 1).map((r) => r.block) },
        from,
        to: index,
      });
      continue;
    }

    const first = depth < MAX_BLOCK_NESTING ? matchListItem(line) : null;
    if (first !== null) {
      const items: Block[][] = [];
      let tight = true;
      while (index < count) {
        const marker = matchListItem(lines[index] as string);
        if (marker === null || marker.ordered !== first.ordered || marker.kind !== first.kind) break;
        const itemLines = [marker.content];
        index += 1;
        let sawBlank = false;
        while (index < count) {
          const current = lines[index] as string;
          if (isBlank(current)) {
            itemLines.push("");
            sawBlank = true;
          } else if (leadingSpaces(current) >= marker.contentOffset) {
            itemLines.push(current.slice(marker.contentOffset));
          } else if (!sawBlank && !interruptsParagraph(current) && !matchListItem(current)) {
            // Lazy continuation line of the item's paragraph.
            itemLines.push(current.trimStart());
          } else {
            break;
          }
          index += 1;
        }
        let trailingBlanks = 0;
        while (itemLines.length > 1 && isBlank(itemLines[itemLines.length - 1] as string)) {
          itemLines.pop();
          trailingBlanks += 1;
        }
        items.push(parseBlockRanges(itemLines, openAt(index) && trailingBlanks === 0, depth + 1).map((r) => r.block));
        const next = lines[index];
        if (trailingBlanks > 0) {
          const nextMarker = next === undefined ? null : matchListItem(next);
          if (nextMarker !== null && nextMarker.ordered === first.ordered && nextMarker.kind === first.kind) {
            tight = false;
          }
        }
      }
      blocks.push({
        block: { type: "list", ordered: first.ordered, start: first.start, tight, items },
        from,
        to: index,
      });
      continue;
    }

    if (tableStartsAt(lines, index)) {
      const head = splitRow(line);
      const align = splitRow(lines[index + 1] as string).map(alignment);
      const rows: string[][] = [];
      index += 2;
      while (index < count) {
        const current = lines[index] as string;
        if (isBlank(current) || interruptsParagraph(current)) break;
        const cells = splitRow(current);
        rows.push(head.map((_, column) => cells[column] ?? ""));
        index += 1;
      }
      blocks.push({
        block: {
          type: "table",
          align,
          head: head.map((cell) => parseInline(cell, false)),
          rows: rows.map((row) => row.map((cell) => parseInline(cell, false))),
        },
        from,
        to: index,
      });
      continue;
    }

    // Paragraph: until a blank line or a line that starts another block.
    const text: string[] = [line.trim()];
    index += 1;
    while (index < count) {
      const current = lines[index] as string;
      if (isBlank(current) || interruptsParagraph(current) || tableStartsAt(lines, index)) break;
      text.push(current.trim());
      index += 1;
    }
    blocks.push({ block: { type: "paragraph", children: parseInline(text.join("\n"), openAt(index)) }, from, to: index });
  }
  return blocks;
}

function toLines(markdown: string): string[] {
  // Tabs become 4 spaces: close enough to CommonMark's tab stops for indentation.
  return markdown.replace(/\r\n?/g, "\n").replace(/\t/g, "    ").split("\n");
}

export function parseMarkdown(markdown: string, options: ParseOptions = {}): Block[] {
  return parseBlockRanges(toLines(markdown), options.streaming ?? false).map((ranged) => ranged.block);
}

/** Like `parseMarkdown`, with each top-level block's source text (a stable memo key). */
export function parseMarkdownBlocks(markdown: string, options: ParseOptions = {}): SourceBlock[] {
  const lines = toLines(markdown);
  return parseBlockRanges(lines, options.streaming ?? false).map((ranged) => ({
    block: ranged.block,
    source: lines.slice(ranged.from, ranged.to).join("\n"),
  }));
}

// ---------------------------------------------------------------------------
// Inlines
// ---------------------------------------------------------------------------

const ESCAPABLE = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/;
const WHITESPACE = /\s/;
const WORD_CHAR = /[\p{L}\p{N}]/u;
const AUTOLINK = /^<([a-zA-Z][a-zA-Z0-9+.-]{1,31}:[^\s<>]*)>/;
const BARE_URL = /^https?:\/\/[^\s<>]+/;
const TRAILING_DELIMITERS = /[*_~`]+$/;

interface InlineContext {
  readonly src: string;
  /**
   * Memo of failed closer searches: key -> smallest start position from
   * which a search (bounded by the same end) found nothing. A later search
   * starting at or after it cannot succeed either. Without this, text with
   * many unmatched `*` or `[` would re-scan the rest of the paragraph for
   * each one: quadratic, re-run on every streamed frame.
   */
  readonly failedFrom: Map<string, number>;
}

function failed(context: InlineContext, key: string, from: number): boolean {
  const position = context.failedFrom.get(key);
  return position !== undefined && from >= position;
}

function recordFailure(context: InlineContext, key: string, from: number): void {
  const position = context.failedFrom.get(key);
  if (position === undefined || from < position) context.failedFrom.set(key, from);
}

function runLength(src: string, index: number, end: number, char: string): number {
  let length = 0;
  while (index + length < end && src.charAt(index + length) === char) length += 1;
  return length;
}

/** Start of the next run of exactly `length` backticks in [from, end), or -1. */
function findCodeClose(context: InlineContext, from: number, end: number, length: number): number {
  const key = `code:${length}:${end}`;
  if (failed(context, key, from)) return -1;
  const { src } = context;
  let index = from;
  while (index < end) {
    const next = src.indexOf("`", index);
    if (next === -1 || next >= end) break;
    const run = runLength(src, next, end, "`");
    if (run === length) return next;
    index = next + run;
  }
  recordFailure(context, key, from);
  return -1;
}

/** Where the closing delimiter for an opener of `length` x `char` starts, or -1. */
function findDelimiterClose(context: InlineContext, from: number, end: number, char: string, length: number): number {
  const key = `${char}:${length}:${end}`;
  if (failed(context, key, from)) return -1;
  const { src } = context;
  let index = from;
  while (index < end) {
    const current = src.charAt(index);
    if (current === "\\") {
      index += 2;
      continue;
    }
    if (current === "`") {
      const run = runLength(src, index, end, "`");
      const close = findCodeClose(context, index + run, end, run);
      index = close === -1 ? index + run : close + run;
      continue;
    }
    if (current === char) {
      const run = runLength(src, index, end, char);
      const before = src.charAt(index - 1);
      const after = index + run < end ? src.charAt(index + run) : "";
      const leftOk = index > from && !WHITESPACE.test(before);
      const rightOk = char !== "_" || !WORD_CHAR.test(after);
      const lengthOk = char === "~" ? run === 2 : run === length || run >= 3;
      if (leftOk && rightOk && lengthOk) return index + run - length;
      index += run;
      continue;
    }
    index += 1;
  }
  recordFailure(context, key, from);
  return -1;
}

/** Index of the "]" matching the "[" before `from`, or -1. */
function findBracketClose(context: InlineContext, from: number, end: number): number {
  const key = `]:${end}`;
  if (failed(context, key, from)) return -1;
  const { src } = context;
  let depth = 0;
  let index = from;
  while (index < end) {
    const current = src.charAt(index);
    if (current === "\\") {
      index += 2;
      continue;
    }
    if (current === "`") {
      const run = runLength(src, index, end, "`");
      const close = findCodeClose(context, index + run, end, run);
      index = close === -1 ? index + run : close + run;
      continue;
    }
    if (current === "[") depth += 1;
    else if (current === "]") {
      if (depth === 0) return index;
      depth -= 1;
    }
    index += 1;
  }
  recordFailure(context, key, from);
  return -1;
}

/** `src.indexOf(char, from)`, but looking no further than `end`. */
function indexWithin(src: string, char: string, from: number, end: number): number {
  for (let index = from; index < end; index += 1) if (src.charAt(index) === char) return index;
  return -1;
}

/** Longest link target (destination and title) considered. */
const MAX_LINK_TARGET = 2048;

interface LinkTarget {
  href: string;
  title: string | undefined;
  /** Index after the closing ")". */
  next: number;
}

/**
 * Parse "(destination "title")" starting at the "(" at `open`.
 * Returns null if it is not a complete link target, "unfinished" if the
 * text ends before it could be completed.
 */
function parseLinkTarget(src: string, open: number, textEnd: number): LinkTarget | "unfinished" | null {
  // Scan at most MAX_LINK_TARGET characters: without a bound, text such as
  // "[a](" repeated would scan to the end once per "[", quadratically.
  const end = Math.min(textEnd, open + MAX_LINK_TARGET);
  const cutShort = end < textEnd;
  let index = open + 1;
  while (index < end && (src.charAt(index) === " " || src.charAt(index) === "\n")) index += 1;
  let href = "";
  if (src.charAt(index) === "<") {
    const close = indexWithin(src, ">", index + 1, end);
    if (close === -1) return !cutShort && indexWithin(src, "\n", index, end) === -1 ? "unfinished" : null;
    href = src.slice(index + 1, close);
    index = close + 1;
  } else {
    let depth = 0;
    const start = index;
    while (index < end) {
      const char = src.charAt(index);
      if (char === "\\" && index + 1 < end) {
        index += 2;
        continue;
      }
      if (char === " " || char === "\n" || char === "\t" || char === "\r" || char === "\f" || char === "\v") break;
      if (char === "(") depth += 1;
      else if (char === ")") {
        if (depth === 0) break;
        depth -= 1;
      }
      index += 1;
    }
    href = src.slice(start, index).replace(/\\([^\w\s])/g, "$1");
  }
  while (index < end && (src.charAt(index) === " " || src.charAt(index) === "\n")) index += 1;
  let title: string | undefined;
  const quote = src.charAt(index);
  if (quote === '"' || quote === "'" || quote === "(") {
    const closing = quote === "(" ? ")" : quote;
    const close = indexWithin(src, closing, index + 1, end);
    if (close === -1) return cutShort ? null : "unfinished";
    title = src.slice(index + 1, close);
    index = close + 1;
    while (index < end && src.charAt(index) === " ") index += 1;
  }
  if (index >= end) return cutShort ? null : "unfinished";
  if (src.charAt(index) !== ")") return null;
  return { href, title, next: index + 1 };
}

/**
 * Formatting nested deeper than this is shown as literal text. Real answers
 * nest two or three levels; the cap keeps adversarial input such as
 * "**a **a **a ..." (each opener unclosed) from recursing thousands of
 * levels deep and overflowing the stack.
 */
const MAX_NESTING = 16;

function parseRange(context: InlineContext, start: number, end: number, open: boolean, depth = 0): Inline[] {
  const { src } = context;
  const nodes: Inline[] = [];
  let text = "";
  const flush = () => {
    if (text !== "") {
      nodes.push({ type: "text", text });
      text = "";
    }
  };
  const push = (node: Inline) => {
    flush();
    nodes.push(node);
  };

  let index = start;
  while (index < end) {
    const char = src.charAt(index);

    if (char === "\\") {
      const next = src.charAt(index + 1);
      if (index + 1 < end && next === "\n") {
        push({ type: "break" });
        index += 2;
        continue;
      }
      if (index + 1 < end && ESCAPABLE.test(next)) {
        text += next;
        index += 2;
        continue;
      }
      text += char;
      index += 1;
      continue;
    }

    if (char === "\n") {
      text = text.replace(/ +$/, "");
      push({ type: "break" });
      index += 1;
      continue;
    }

    if (char === "`") {
      const run = runLength(src, index, end, "`");
      const close = findCodeClose(context, index + run, end, run);
      if (close !== -1 || open) {
        let code = src.slice(index + run, close === -1 ? end : close).replace(/\n/g, " ");
        // One space of padding on both sides is syntax, so `` `x` `` can show backticks.
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim() !== "") code = code.slice(1, -1);
        push({ type: "code", text: code });
        index = close === -1 ? end : close + run;
        continue;
      }
      text += "`".repeat(run);
      index += run;
      continue;
    }

    if (char === "*" || char === "_" || char === "~") {
      const run = runLength(src, index, end, char);
      const before = index > 0 ? src.charAt(index - 1) : "";
      const after = index + run < end ? src.charAt(index + run) : "";
      const canOpen =
        depth < MAX_NESTING &&
        after !== "" && !WHITESPACE.test(after) && (char !== "_" || !WORD_CHAR.test(before)) && (char !== "~" || run === 2);
      if (canOpen) {
        const lengths = char === "~" ? [2] : run >= 3 ? [3, 2, 1] : run === 2 ? [2, 1] : [1];
        let matched = false;
        for (const length of lengths) {
          const contentStart = index + run;
          const close = findDelimiterClose(context, contentStart, end, char, length);
          if (close === -1) continue;
          // Opener characters beyond `length` stay literal.
          text += char.repeat(run - length);
          push(emphasis(char, length, parseRange(context, contentStart, close, false, depth + 1)));
          index = close + length;
          matched = true;
          break;
        }
        if (matched) continue;
        if (open && !WORD_CHAR.test(before)) {
          // Streaming: the closing delimiter has not arrived yet.
          const length = lengths[0] as number;
          text += char.repeat(run - length);
          push(emphasis(char, length, parseRange(context, index + run, end, true, depth + 1)));
          index = end;
          continue;
        }
      }
      text += char.repeat(run);
      index += run;
      continue;
    }

    if ((char === "[" || (char === "!" && src.charAt(index + 1) === "[")) && depth < MAX_NESTING) {
      const image = char === "!";
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
          push({ type: "link", href: safeHref(target.href), title: target.title, children: label });
          index = target.next;
          continue;
        }
        if (target === "unfinished" && open) {
          push({ type: "link", href: null, title: undefined, children: parseRange(context, labelStart, close, false, depth + 1) });
          index = end;
          continue;
        }
      }
      text += image ? "![" : "[";
      index = labelStart;
      continue;
    }

    if (char === "<") {
      const match = AUTOLINK.exec(src.slice(index, Math.min(end, index + 2048)));
      if (match !== null) {
        const url = match[1] as string;
        const href = safeHref(url);
        push({ type: "link", href, title: undefined, children: [{ type: "text", text: url }] });
        index += match[0].length;
        continue;
      }
    }

    if (char === "h" && !WORD_CHAR.test(index > 0 ? src.charAt(index - 1) : "")) {
      const match = BARE_URL.exec(src.slice(index, Math.min(end, index + 2048)));
      if (match !== null) {
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
        if (href !== null && url.length > "https://".length) {
          push({ type: "link", href, title: undefined, children: [{ type: "text", text: url }] });
          index += url.length;
          continue;
        }
      }
    }

    text += char;
    index += 1;
  }
  flush();
  return nodes;
}

function emphasis(char: string, length: number, children: Inline[]): Inline {
  if (char === "~") return { type: "del", children };
  if (length === 3) return { type: "strong", children: [{ type: "em", children }] };
  return { type: length === 2 ? "strong" : "em", children };
}

/** Parse inline Markdown. `open`: the text may be cut off (streaming). */
export function parseInline(source: string, open = false): Inline[] {
  let src = source;
  // A trailing run of delimiter characters is most likely the start of
  // formatting whose content has not arrived: hide it rather than flash it.
  if (open) src = src.replace(TRAILING_DELIMITERS, "");
  return parseRange({ src, failedFrom: new Map() }, 0, src.length, open);
}
