// @vitest-environment jsdom
import { cleanup, render } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { ChatMessage } from "@tokenrelay/client";
import * as parse from "../src/markdown/parse";
import { MessageList, StreamingMessage } from "../src/StreamingMessage";

vi.mock("../src/markdown/parse", async (importOriginal) => {
  const actual = await importOriginal<typeof import("../src/markdown/parse")>();
  return { ...actual, parseMarkdownBlocks: vi.fn(actual.parseMarkdownBlocks) };
});

afterEach(() => {
  cleanup();
  vi.mocked(parse.parseMarkdownBlocks).mockClear();
});

const parsedTexts = () => vi.mocked(parse.parseMarkdownBlocks).mock.calls.map(([text]) => text);

describe("StreamingMessage", () => {
  it("shows the blinking cursor only while streaming", () => {
    const { container, rerender } = render(<StreamingMessage content="Hello **wor" isStreaming />);
    expect(container.querySelectorAll(".cursor")).toHaveLength(1);
    expect(container.querySelector("strong")?.textContent).toBe("wor");
    rerender(<StreamingMessage content="Hello **world**" isStreaming={false} />);
    expect(container.querySelectorAll(".cursor")).toHaveLength(0);
    expect(container.querySelector("strong")?.textContent).toBe("world");
  });
});

describe("MessageList", () => {
  it("re-renders only the message that changed", () => {
    const finished: ChatMessage = { id: "a1", role: "assistant", content: "An *earlier* answer.", status: "done" };
    const question: ChatMessage = { id: "u2", role: "user", content: "and then?", status: "done" };
    const streaming = (content: string): ChatMessage => ({ id: "a2", role: "assistant", content, status: "streaming" });

    const { container, rerender } = render(<MessageList messages={[finished, question, streaming("Then")]} />);
    expect(parsedTexts()).toEqual(["An *earlier* answer.", "Then"]);

    vi.mocked(parse.parseMarkdownBlocks).mockClear();
    rerender(<MessageList messages={[finished, question, streaming("Then we")]} />);
    rerender(<MessageList messages={[finished, question, streaming("Then we stream")]} />);
    // The finished answer (same object) was not rendered or parsed again.
    expect(parsedTexts()).toEqual(["Then we", "Then we stream"]);

    const articles = container.querySelectorAll("article");
    expect(Array.from(articles, (article) => article.getAttribute("data-status"))).toEqual(["done", "done", "streaming"]);
    expect(articles[2]?.getAttribute("aria-busy")).toBe("true");
    expect(articles[2]?.textContent).toContain("Then we stream");
  });

  it("shows the user's text as typed, not as Markdown", () => {
    const { container } = render(
      <MessageList messages={[{ id: "u", role: "user", content: "**not bold**\n<b>tag</b>", status: "done" }]} />,
    );
    expect(container.querySelector("strong, b")).toBeNull();
    expect(container.querySelector(".message-plain")?.textContent).toBe("**not bold**\n<b>tag</b>");
  });
});
