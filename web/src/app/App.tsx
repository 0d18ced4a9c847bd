import {
  useCallback,
  useLayoutEffect,
  useRef,
  useState,
  type FormEvent,
  type KeyboardEvent,
  type RefObject,
} from "react";
import type { ChatError, ChatMessage } from "../client/chatStore";
import { MessageList } from "../react/StreamingMessage";
import { useStreamingChat } from "../react/useStreamingChat";

export interface AppProps {
  /** The stream endpoint, relative to the page. */
  apiUrl: string;
}

/** Pixels from the bottom within which the view keeps following new text. */
const FOLLOW_THRESHOLD = 80;

/** Follow the answer as it grows, unless the reader scrolled up. `follow()` starts following again. */
function useFollow(scrollRef: RefObject<HTMLElement | null>, messages: readonly ChatMessage[]) {
  const followRef = useRef(true);
  useLayoutEffect(() => {
    const scroller = scrollRef.current;
    if (scroller !== null && followRef.current) scroller.scrollTop = scroller.scrollHeight;
  }, [scrollRef, messages]);

  const onScroll = () => {
    const scroller = scrollRef.current;
    if (scroller === null) return;
    followRef.current = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < FOLLOW_THRESHOLD;
  };
  const follow = useCallback(() => {
    followRef.current = true;
  }, []);
  return { onScroll, follow };
}

/** Grow the textarea with its content, up to the CSS max-height. */
function useAutoGrow(inputRef: RefObject<HTMLTextAreaElement | null>, draft: string): void {
  useLayoutEffect(() => {
    const input = inputRef.current;
    if (input === null) return;
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight}px`;
  }, [inputRef, draft]);
}

function Header({ canReset, onNewChat }: { canReset: boolean; onNewChat: () => void }) {
  return (
    <header className="app-header">
      <div className="brand">
        <span className="brand-mark" aria-hidden="true" />
        <h1>tokenrelay</h1>
      </div>
      <button type="button" className="button button-quiet" onClick={onNewChat} disabled={!canReset}>
        New chat
      </button>
    </header>
  );
}

function ErrorBanner({ error, onRetry }: { error: ChatError; onRetry: () => void }) {
  return (
    <div className="error" role="alert">
      <p className="error-text">{error.message}</p>
      <button type="button" className="button" onClick={onRetry}>
        Retry
      </button>
    </div>
  );
}

function Empty() {
  return (
    <div className="empty">
      <p className="empty-title">Ask something</p>
      <p>Answers stream in as they are written. Markdown and code blocks are supported.</p>
    </div>
  );
}

interface ComposerProps {
  draft: string;
  setDraft: (draft: string) => void;
  inputRef: RefObject<HTMLTextAreaElement | null>;
  isLoading: boolean;
  submit: () => void;
  stop: () => void;
}

function Composer({ draft, setDraft, inputRef, isLoading, submit, stop }: ComposerProps) {
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
  return (
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
  );
}

export function App({ apiUrl }: AppProps) {
  // Stop closes the connection, which cancels the run under the server's default on_disconnect=cancel.
  // (The store's `cancelUrl` option would also POST /api/runs/{id}/cancel; not used here yet.)
  const { messages, isLoading, status, error, sendMessage, stop, retry, regenerate, reset } = useStreamingChat(apiUrl);
  const [draft, setDraft] = useState("");
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const scrollRef = useRef<HTMLElement>(null);
  // Layout effects run in this order: the composer takes its height before the view scrolls to the end.
  useAutoGrow(inputRef, draft);
  const { onScroll, follow } = useFollow(scrollRef, messages);

  const submit = useCallback(() => {
    if (isLoading || draft.trim() === "") return;
    follow();
    void sendMessage(draft);
    setDraft("");
  }, [draft, isLoading, sendMessage, follow]);

  const newChat = () => {
    reset();
    setDraft("");
    inputRef.current?.focus();
  };

  const last = messages[messages.length - 1];
  const canRegenerate = !isLoading && status !== "error" && last !== undefined;

  return (
    <div className="app">
      <Header canReset={messages.length > 0} onNewChat={newChat} />
      <main className="conversation" ref={scrollRef} onScroll={onScroll}>
        {messages.length === 0 ? <Empty /> : <MessageList messages={messages} />}
        {error !== null ? <ErrorBanner error={error} onRetry={() => void retry()} /> : null}
        {canRegenerate ? (
          <div className="actions">
            <button type="button" className="button button-quiet" onClick={() => void regenerate()}>
              Regenerate
            </button>
          </div>
        ) : null}
      </main>
      <Composer draft={draft} setDraft={setDraft} inputRef={inputRef} isLoading={isLoading} submit={submit} stop={stop} />
    </div>
  );
}
