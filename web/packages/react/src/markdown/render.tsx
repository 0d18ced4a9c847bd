/**
 * Render the Markdown tree from `parse.ts` as React elements.
 *
 * Safety by construction: every element type here is fixed, text goes in as
 * React text children (escaped), and the only attribute from the input is a
 * link href already checked by `safeHref`. There is no
 * dangerouslySetInnerHTML anywhere in this project.
 */
import { createElement, Fragment, memo, useMemo, useState, type CSSProperties, type ReactNode } from "react";
import { parseMarkdownBlocks, type Align, type Block, type Inline } from "./parse.js";

function renderInlines(nodes: readonly Inline[]): ReactNode[] {
  return nodes.map((node, index) => {
    switch (node.type) {
      case "text":
        return <Fragment key={index}>{node.text}</Fragment>;
      case "code":
        return <code key={index}>{node.text}</code>;
      case "strong":
        return <strong key={index}>{renderInlines(node.children)}</strong>;
      case "em":
        return <em key={index}>{renderInlines(node.children)}</em>;
      case "del":
        return <del key={index}>{renderInlines(node.children)}</del>;
      case "break":
        return <br key={index} />;
      case "link":
        return node.href === null ? (
          <span key={index} className="md-link-text">
            {renderInlines(node.children)}
          </span>
        ) : (
          <a key={index} href={node.href} title={node.title} target="_blank" rel="noopener noreferrer nofollow ugc">
            {renderInlines(node.children)}
          </a>
        );
    }
  });
}

function CodeBlock({ lang, text, tail }: { lang: string; text: string; tail: ReactNode }) {
  const [copied, setCopied] = useState(false);
  const copy = () => {
    void navigator.clipboard?.writeText(text).then(
      () => {
        setCopied(true);
        setTimeout(() => setCopied(false), 1500);
      },
      () => {},
    );
  };
  return (
    <div className="md-code">
      <div className="md-code-bar">
        <span className="md-code-lang">{lang || "code"}</span>
        <button type="button" className="md-code-copy" onClick={copy}>
          {copied ? "Copied" : "Copy"}
        </button>
      </div>
      <pre>
        <code className={lang ? `language-${lang.replace(/[^\w-]/g, "")}` : undefined}>
          {text}
          {tail}
        </code>
      </pre>
    </div>
  );
}

/** Each child block, `tail` going to the last one. */
function renderChildren(children: readonly Block[], tail: ReactNode, tight = false): ReactNode[] {
  return children.map((child, index) => renderBlock(child, index, index === children.length - 1 ? tail : null, tight));
}

function renderList(block: Extract<Block, { type: "list" }>, key: number, tail: ReactNode): ReactNode {
  const items = block.items.map((item, itemIndex) => {
    const itemTail = itemIndex === block.items.length - 1 ? tail : null;
    return (
      <li key={itemIndex}>
        {renderChildren(item, itemTail, block.tight)}
        {item.length === 0 ? itemTail : null}
      </li>
    );
  });
  return block.ordered ? (
    <ol key={key} start={block.start === 1 ? undefined : block.start}>
      {items}
    </ol>
  ) : (
    <ul key={key}>{items}</ul>
  );
}

function cellStyle(align: Align | undefined): CSSProperties | undefined {
  return align ? { textAlign: align } : undefined;
}

function renderTable(block: Extract<Block, { type: "table" }>, key: number, tail: ReactNode): ReactNode {
  return (
    <Fragment key={key}>
      <div className="md-table">
        <table>
          <thead>
            <tr>
              {block.head.map((cell, index) => (
                <th key={index} style={cellStyle(block.align[index])}>
                  {renderInlines(cell)}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {block.rows.map((row, rowIndex) => (
              <tr key={rowIndex}>
                {row.map((cell, index) => (
                  <td key={index} style={cellStyle(block.align[index])}>
                    {renderInlines(cell)}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {tail}
    </Fragment>
  );
}

/**
 * `tail` (the streaming cursor) is placed at the end of the last text the
 * block shows, so it follows the words instead of sitting on its own line.
 */
function renderBlock(block: Block, key: number, tail: ReactNode, tight = false): ReactNode {
  switch (block.type) {
    case "paragraph":
      return tight ? (
        <Fragment key={key}>
          {renderInlines(block.children)}
          {tail}
        </Fragment>
      ) : (
        <p key={key}>
          {renderInlines(block.children)}
          {tail}
        </p>
      );
    case "heading":
      return createElement(`h${block.level}`, { key }, ...renderInlines(block.children), tail);
    case "code":
      return <CodeBlock key={key} lang={block.lang} text={block.text} tail={tail} />;
    case "blockquote":
      return (
        <blockquote key={key}>
          {renderChildren(block.children, tail)}
          {block.children.length === 0 ? tail : null}
        </blockquote>
      );
    case "list":
      return renderList(block, key, tail);
    case "hr":
      return (
        <Fragment key={key}>
          <hr />
          {tail}
        </Fragment>
      );
    case "table":
      return renderTable(block, key, tail);
  }
}

interface BlockViewProps {
  block: Block;
  source: string;
  tail: ReactNode;
}

/**
 * One top-level block. While an answer streams only its last block changes,
 * so comparing sources lets React skip every earlier block.
 */
const BlockView = memo(
  function BlockView({ block, tail }: BlockViewProps) {
    return <>{renderBlock(block, 0, tail)}</>;
  },
  (previous, next) => previous.source === next.source && previous.tail === next.tail && previous.block.type === next.block.type,
);

export interface MarkdownProps {
  text: string;
  /** The text is still arriving: render unfinished syntax as finished. */
  streaming?: boolean;
  /** Shown at the end of the content (the streaming cursor). */
  cursor?: ReactNode;
}

export const Markdown = memo(function Markdown({ text, streaming = false, cursor = null }: MarkdownProps) {
  const blocks = useMemo(() => parseMarkdownBlocks(text, { streaming }), [text, streaming]);
  return (
    <div className="md">
      {blocks.map((item, index) => (
        <BlockView
          // Keys by position: block i stays block i as text is appended.
          key={index}
          block={item.block}
          // The streaming flag changes how the last block parses.
          source={index === blocks.length - 1 && streaming ? `${item.source}\u0000open` : item.source}
          tail={index === blocks.length - 1 ? cursor : null}
        />
      ))}
      {blocks.length === 0 ? cursor : null}
    </div>
  );
});
