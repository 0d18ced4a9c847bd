import { useCallback, useLayoutEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { MessageList } from "../react/StreamingMessage";
import { useStreamingChat } from "../react/useStreamingChat";

export interface AppProps {
  /** The stream endpoint, relative to the page. */
  apiUrl: string;
}

/** Pixels from the bottom within which the view keeps following new text. */
const FOLLOW_THRESHOLD = 80;

export function App({ apiUrl }: AppProps) {
  // Stop closes the connection, which cancels the run under the server's default on_disconnect=cancel.
  // (The store's `cancelUrl` option would also POST /api/runs/{id}/cancel; not used here yet.)
  const { messages, isLoading, status, error, sendMessage, stop, retry, regenerate, reset } = useStreamingChat(apiUrl);
  const [draft, setDraft] = useState("");
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const scrollRef = useRef<HTMLElement>(null);
  const followRef = useRef(true);

  const submit = useCallback(() => {
    if (isLoading || draft.trim() === "") return;
    followRef.current = true;
    void sendMessage(draft);
    setDraft("");
  }, [draft, isLoading, sendMessage]);

  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    submit();
  };

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    // Enter sends, Shift+Enter is a newline; never while an IME is composing.
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      submit();
    }
  };

  // Grow the textarea with its content, up to the CSS max-height.
  useLayoutEffect(() => {
    const input = inputRef.current;
    if (input === null) return;
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight}px`;
  }, [draft]);

  // Follow the answer as it grows, unless the reader scrolled up.
  useLayoutEffect(() => {
    const scroller = scrollRef.current;
    if (scroller !== null && followRef.current) scroller.scrollTop = scroller.scrollHeight;
  }, [messages]);

  const onScroll = () => {
    const scroller = scrollRef.current;
    if (scroller === null) return;
    followRef.current = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < FOLLOW_THRESHOLD;
  };

  const newChat = () => {
    reset();
    setDraft("");
    inputRef.current?.focus();
  };

  const last = messages[messages.length - 1];
  const canRegenerate = !isLoading && status !== "error" && last !== undefined;

  return (
    <div className="app">
      <header className="app-header">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true" />
          <h1>tokenrelay</h1>
        </div>
        <button type="button" className="button button-quiet" onClick={newChat} disabled={messages.length === 0}>
          New chat
        </button>
      </header>

      <main className="conversation" ref={scrollRef} onScroll={onScroll}>
        {messages.length === 0 ? (
          <div className="empty">
            <p className="empty-title">Ask something</p>
            <p>Answers stream in as they are written. Markdown and code blocks are supported.</p>
          </div>
        ) : (
          <MessageList messages={messages} />
        )}

        {error !== null ? (
          <div className="error" role="alert">
            <p className="error-text">{error.message}</p>
            <button type="button" className="button" onClick={() => void retry()}>
              Retry
            </button>
          </div>
        ) : null}

        {canRegenerate ? (
          <div className="actions">
            <button type="button" className="button button-quiet" onClick={() => void regenerate()}>
              Regenerate
            </button>
          </div>
        ) : null}
      </main>

      <form className="composer" onSubmit={onSubmit}>
        <label htmlFor="message" className="visually-hidden">
          Message
        </label>
        <textarea
          id="message"
          ref={inputRef}
          value={draft}
          onChange={(event) => setDraft(event.target.value)}
          onKeyDown={onKeyDown}
          placeholder="Message tokenrelay (Enter to send, Shift+Enter for a new line)"
          rows={1}
          autoFocus
        />
        {isLoading ? (
          <button type="button" className="button button-stop" onClick={stop}>
            Stop
          </button>
        ) : (
          <button type="submit" className="button button-primary" disabled={draft.trim() === ""}>
            Send
          </button>
        )}
      </form>
    </div>
  );
}
