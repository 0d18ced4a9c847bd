/**
 * A small Markdown parser for chat answers, producing a plain data tree
 * (tree.ts) that `render.tsx` turns into React elements. Blocks are parsed
 * in blocks.ts, inline text in inline.ts.
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
import { parseBlockRanges } from "./blocks.js";
import type { Block, ParseOptions, SourceBlock } from "./tree.js";

export { parseInline } from "./inline.js";
export type { Align, Block, Inline, ParseOptions, SourceBlock } from "./tree.js";

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
