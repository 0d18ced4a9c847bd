export { parseInline, parseMarkdown, parseMarkdownBlocks } from "./parse.js";
export type { Align, Block, Inline, ParseOptions, SourceBlock } from "./parse.js";
export { Markdown } from "./render.js";
export type { MarkdownProps } from "./render.js";
export { safeHref } from "./safeUrl.js";
