/** The Markdown tree `parse.ts` produces and `render.tsx` renders: plain data, known node types only. */

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
