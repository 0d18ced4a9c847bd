export { parseInline, parseMarkdown, parseMarkdownBlocks } from "./parse";
export type { Align, Block, Inline, ParseOptions, SourceBlock } from "./parse";
export { Markdown } from "./render";
export type { MarkdownProps } from "./render";
export { safeHref } from "./safeUrl";
