/**
 * Looking ahead in inline text: where a code span, an emphasis run or a
 * link label closes, and what a link target says. The inline parser
 * (inline.ts) asks; failed searches are remembered so that text full of
 * unmatched openers is scanned once, not once per opener.
 */

export const WHITESPACE = /\s/;
export const WORD_CHAR = /[\p{L}\p{N}]/u;

export interface InlineContext {
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

/** `search()`, unless a search under the same `key` from at or before `from` already failed; a failure is remembered. */
function memoized(context: InlineContext, key: string, from: number, search: () => number): number {
  const failedFrom = context.failedFrom.get(key);
  if (failedFrom !== undefined && from >= failedFrom) return -1;
  const found = search();
  if (found === -1 && (failedFrom === undefined || from < failedFrom)) context.failedFrom.set(key, from);
  return found;
}

export function runLength(src: string, index: number, end: number, char: string): number {
  let length = 0;
  while (index + length < end && src.charAt(index + length) === char) length += 1;
  return length;
}

/** Start of the next run of exactly `length` backticks in [from, end), or -1. */
export function findCodeClose(context: InlineContext, from: number, end: number, length: number): number {
  return memoized(context, `code:${length}:${end}`, from, () => {
    const { src } = context;
    let index = from;
    while (index < end) {
      const next = src.indexOf("`", index);
      if (next === -1 || next >= end) break;
      const run = runLength(src, next, end, "`");
      if (run === length) return next;
      index = next + run;
    }
    return -1;
  });
}

/** Whether a closer search must step over what starts with `char`: a backslash escape or a code span. */
function opensOpaque(char: string): boolean {
  return char === "\\" || char === "`";
}

/** The index after the escape or code span at `index` (see `opensOpaque`): a closer inside it does not count. */
function skipOpaque(context: InlineContext, index: number, end: number): number {
  const { src } = context;
  if (src.charAt(index) === "\\") return index + 2;
  const run = runLength(src, index, end, "`");
  const close = findCodeClose(context, index + run, end, run);
  return close === -1 ? index + run : close + run;
}

/** Where the closing delimiter for an opener of `length` x `char` starts, or -1. */
export function findDelimiterClose(context: InlineContext, from: number, end: number, char: string, length: number): number {
  return memoized(context, `${char}:${length}:${end}`, from, () => {
    const { src } = context;
    let index = from;
    while (index < end) {
      const current = src.charAt(index);
      if (opensOpaque(current)) {
        index = skipOpaque(context, index, end);
      } else if (current === char) {
        const run = runLength(src, index, end, char);
        const before = src.charAt(index - 1);
        const after = index + run < end ? src.charAt(index + run) : "";
        const leftOk = index > from && !WHITESPACE.test(before);
        const rightOk = char !== "_" || !WORD_CHAR.test(after);
        const lengthOk = char === "~" ? run === 2 : run === length || run >= 3;
        if (leftOk && rightOk && lengthOk) return index + run - length;
        index += run;
      } else {
        index += 1;
      }
    }
    return -1;
  });
}

/** Index of the "]" matching the "[" before `from`, or -1. */
export function findBracketClose(context: InlineContext, from: number, end: number): number {
  return memoized(context, `]:${end}`, from, () => {
    const { src } = context;
    let depth = 0;
    let index = from;
    while (index < end) {
      const current = src.charAt(index);
      if (opensOpaque(current)) {
        index = skipOpaque(context, index, end);
        continue;
      }
      if (current === "[") depth += 1;
      else if (current === "]") {
        if (depth === 0) return index;
        depth -= 1;
      }
      index += 1;
    }
    return -1;
  });
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
export function parseLinkTarget(src: string, open: number, textEnd: number): LinkTarget | "unfinished" | null {
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
