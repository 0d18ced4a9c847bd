/**
 * Block parsing: lines in, blocks out, one function per construct. Each rule
 * looks at the line at `from` and either returns the block it starts (with
 * the range of lines it took) or `null` for the next rule to try; a
 * paragraph takes whatever no other rule did.
 */
import {
  alignment,
  fenceOpen,
  HEADING,
  interruptsParagraph,
  isBlank,
  isFenceClose,
  leadingSpaces,
  matchListItem,
  QUOTE,
  sameList,
  splitRow,
  tableStartsAt,
  THEMATIC_BREAK,
  type ListMarker,
} from "./blockSyntax.js";
import { parseInline } from "./inline.js";
import type { Block } from "./tree.js";

/** A block and the lines [from, to) it came from. */
export interface Ranged {
  block: Block;
  from: number;
  to: number;
}

/** Quotes and lists nested deeper than this become paragraphs (bounds recursion on hostile input). */
const MAX_BLOCK_NESTING = 32;

/** The lines being parsed, and how. */
interface Lines {
  readonly lines: string[];
  readonly streaming: boolean;
  readonly depth: number;
}

type BlockRule = (input: Lines, from: number) => Ranged | null;

/**
 * Whether the construct ending at `end` (exclusive) reaches the end of the
 * text, i.e. is the one still being streamed.
 */
function openAt(input: Lines, end: number): boolean {
  return input.streaming && end >= input.lines.length;
}

function lineAt(input: Lines, index: number): string {
  return input.lines[index] as string;
}

function fencedCode(input: Lines, from: number): Ranged | null {
  const fence = fenceOpen(lineAt(input, from));
  if (fence === null) return null;
  const count = input.lines.length;
  const body: string[] = [];
  let index = from + 1;
  let closed = false;
  while (index < count) {
    const current = lineAt(input, index);
    if (isFenceClose(current, fence.fence)) {
      closed = true;
      index += 1;
      break;
    }
    // Content lines lose up to the opening fence's indentation.
    body.push(current.slice(Math.min(fence.indent, leadingSpaces(current))));
    index += 1;
  }
  const lang = fence.info.split(/\s+/)[0] ?? "";
  return { block: { type: "code", lang, text: body.join("\n"), closed }, from, to: index };
}

function heading(input: Lines, from: number): Ranged | null {
  const match = HEADING.exec(lineAt(input, from));
  if (match === null) return null;
  const raw = (match[2] ?? "").replace(/(?:^|[ \t]+)#+[ \t]*$/, "");
  const to = from + 1;
  const level = (match[1] ?? "#").length as 1 | 2 | 3 | 4 | 5 | 6;
  return { block: { type: "heading", level, children: parseInline(raw, openAt(input, to)) }, from, to };
}

function thematicBreak(input: Lines, from: number): Ranged | null {
  return THEMATIC_BREAK.test(lineAt(input, from)) ? { block: { type: "hr" }, from, to: from + 1 } : null;
}

function blockquote(input: Lines, from: number): Ranged | null {
  if (input.depth >= MAX_BLOCK_NESTING || !QUOTE.test(lineAt(input, from))) return null;
  const count = input.lines.length;
  const inner: string[] = [];
  let index = from;
  while (index < count) {
    const current = lineAt(input, index);
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
  const children = parseBlocks(inner, openAt(input, index), input.depth + 1);
  return { block: { type: "blockquote", children }, from, to: index };
}

/** One list item's lines (the marker's line at `from`), without its trailing blank lines, which are counted. */
function listItemLines(input: Lines, from: number, marker: ListMarker): { lines: string[]; to: number; trailingBlanks: number } {
  const count = input.lines.length;
  const lines = [marker.content];
  let index = from + 1;
  let sawBlank = false;
  while (index < count) {
    const current = lineAt(input, index);
    if (isBlank(current)) {
      lines.push("");
      sawBlank = true;
    } else if (leadingSpaces(current) >= marker.contentOffset) {
      lines.push(current.slice(marker.contentOffset));
    } else if (!sawBlank && !interruptsParagraph(current) && !matchListItem(current)) {
      // Lazy continuation line of the item's paragraph.
      lines.push(current.trimStart());
    } else {
      break;
    }
    index += 1;
  }
  let trailingBlanks = 0;
  while (lines.length > 1 && isBlank(lines[lines.length - 1] as string)) {
    lines.pop();
    trailingBlanks += 1;
  }
  return { lines, to: index, trailingBlanks };
}

function list(input: Lines, from: number): Ranged | null {
  const first = input.depth < MAX_BLOCK_NESTING ? matchListItem(lineAt(input, from)) : null;
  if (first === null) return null;
  const count = input.lines.length;
  const items: Block[][] = [];
  let tight = true;
  let index = from;
  while (index < count) {
    const marker = matchListItem(lineAt(input, index));
    if (marker === null || !sameList(marker, first)) break;
    const item = listItemLines(input, index, marker);
    index = item.to;
    items.push(parseBlocks(item.lines, openAt(input, index) && item.trailingBlanks === 0, input.depth + 1));
    const next = input.lines[index];
    if (item.trailingBlanks > 0) {
      const nextMarker = next === undefined ? null : matchListItem(next);
      // A blank line between two items of the list makes it loose.
      if (nextMarker !== null && sameList(nextMarker, first)) tight = false;
    }
  }
  return { block: { type: "list", ordered: first.ordered, start: first.start, tight, items }, from, to: index };
}

function table(input: Lines, from: number): Ranged | null {
  if (!tableStartsAt(input.lines, from)) return null;
  const count = input.lines.length;
  const head = splitRow(lineAt(input, from));
  const align = splitRow(lineAt(input, from + 1)).map(alignment);
  const rows: string[][] = [];
  let index = from + 2;
  while (index < count) {
    const current = lineAt(input, index);
    if (isBlank(current) || interruptsParagraph(current)) break;
    const cells = splitRow(current);
    rows.push(head.map((_, column) => cells[column] ?? ""));
    index += 1;
  }
  return {
    block: {
      type: "table",
      align,
      head: head.map((cell) => parseInline(cell, false)),
      rows: rows.map((row) => row.map((cell) => parseInline(cell, false))),
    },
    from,
    to: index,
  };
}

/** Until a blank line or a line that starts another block. */
function paragraph(input: Lines, from: number): Ranged {
  const count = input.lines.length;
  const text: string[] = [lineAt(input, from).trim()];
  let index = from + 1;
  while (index < count) {
    const current = lineAt(input, index);
    if (isBlank(current) || interruptsParagraph(current) || tableStartsAt(input.lines, index)) break;
    text.push(current.trim());
    index += 1;
  }
  return { block: { type: "paragraph", children: parseInline(text.join("\n"), openAt(input, index)) }, from, to: index };
}

/** In order: the first rule that recognises the line wins. */
const BLOCK_RULES: readonly BlockRule[] = [fencedCode, heading, thematicBreak, blockquote, list, table];

/** The blocks of `lines`, each with the range of lines it came from. */
export function parseBlockRanges(lines: string[], streaming: boolean, depth = 0): Ranged[] {
  const input: Lines = { lines, streaming, depth };
  const blocks: Ranged[] = [];
  let index = 0;
  while (index < lines.length) {
    if (isBlank(lineAt(input, index))) {
      index += 1;
      continue;
    }
    const ranged = blockAt(input, index);
    blocks.push(ranged);
    index = ranged.to;
  }
  return blocks;
}

function blockAt(input: Lines, from: number): Ranged {
  for (const rule of BLOCK_RULES) {
    const ranged = rule(input, from);
    if (ranged !== null) return ranged;
  }
  return paragraph(input, from);
}

function parseBlocks(lines: string[], streaming: boolean, depth: number): Block[] {
  return parseBlockRanges(lines, streaming, depth).map((ranged) => ranged.block);
}
