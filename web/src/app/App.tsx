import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type RefObject } from "react";
import { createChatStore, type ChatError, type ChatMessage, type ConversationsOptions } from "@tokenrelay/client";
import { MessageList, useStreamingChat, type UseStreamingChatResult } from "@tokenrelay/react";
import { Composer, useAutoGrow } from "./Composer";
import { authHeaders, hashConversation, setHashConversation } from "./session";
import { SignIn, Sidebar } from "./Sidebar";
import { useAuth, useConversationList, useNavigation, useRemember } from "./useChatPage";

export interface AppProps {
  /** The API root, relative to the page (e.g. "api"). */
  apiBase: string;
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

/** The composer's draft: a refused message comes back into it (unless something new was typed meanwhile). */
function useDraft(chat: UseStreamingChatResult) {
  const [draft, setDraft] = useState("");
  const unsent = chat.error?.unsent;
  useEffect(() => {
    if (unsent !== undefined) setDraft((current) => (current.trim() === "" ? unsent : current));
  }, [unsent, chat.error]);
  return [draft, setDraft] as const;
}

function Conversation({ chat, draft, send }: { chat: UseStreamingChatResult; draft: string; send: (text: string) => void }) {
  const { messages, isLoading, status, error, retry, regenerate } = chat;
  const last = messages[messages.length - 1];
  const canRegenerate = !isLoading && status !== "error" && last !== undefined && last.role === "assistant";
  // A refused message is in the composer again: Retry sends it as it now reads there.
  const onRetry = () => (error?.unsent !== undefined ? send(draft) : void retry());
  return (
    <>
      {messages.length === 0 ? <Empty /> : <MessageList messages={messages} onApprove={chat.approve} onDeny={chat.deny} />}
      {error !== null && error.status !== 401 ? <ErrorBanner error={error} onRetry={onRetry} /> : null}
      {canRegenerate ? (
        <div className="actions">
          <button type="button" className="button button-quiet" onClick={() => void regenerate()}>
            Regenerate
          </button>
        </div>
      ) : null}
    </>
  );
}

export function App({ apiBase }: AppProps) {
  const api = useMemo<ConversationsOptions>(() => ({ base: apiBase, headers: authHeaders }), [apiBase]);
  const [store] = useState(() => createChatStore({ api: `${apiBase}/chat/stream`, headers: authHeaders }));
  const chat = useStreamingChat(`${apiBase}/chat/stream`, { store });
  const signedIn = useRef(() => {});
  const auth = useAuth(() => signedIn.current());
  const { handle } = auth;
  const list = useConversationList(api, handle);
  const navigation = useNavigation(store, api, handle, list);
  useRemember(store, chat, list, navigation);
  useEffect(() => {
    signedIn.current = () => {
      void list.refresh();
      const id = hashConversation();
      if (id !== undefined && store.getState().messages.length === 0) void navigation.open(id);
    };
  });
  useEffect(() => {
    if (chat.error?.status === 401) handle(chat.error);
  }, [chat.error, handle]);

  const [draft, setDraft] = useDraft(chat);
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const scrollRef = useRef<HTMLElement>(null);
  // Layout effects run in this order: the composer takes its height before the view scrolls to the end.
  useAutoGrow(inputRef, draft);
  const { onScroll, follow } = useFollow(scrollRef, chat.messages);
  const send = (text: string) => {
    if (chat.isLoading || text.trim() === "") return;
    follow();
    void chat.sendMessage(text);
    setDraft("");
  };
  const newChat = () => {
    chat.load(undefined, []);
    setHashConversation(undefined);
    setDraft("");
    inputRef.current?.focus();
  };

  return (
    <div className="app">
      <Sidebar
        conversations={list.items}
        currentId={chat.conversationId}
        error={list.error}
        onOpen={(id) => void navigation.open(id)}
        onNew={newChat}
        onDelete={(id) => void navigation.remove(id)}
      />
      <div className="chat">
        {auth.signIn !== null ? <SignIn reason={auth.signIn} onSubmit={auth.submitToken} /> : null}
        <main className="conversation" ref={scrollRef} onScroll={onScroll}>
          <Conversation chat={chat} draft={draft} send={send} />
        </main>
        <Composer draft={draft} setDraft={setDraft} inputRef={inputRef} isLoading={chat.isLoading} submit={() => send(draft)} stop={chat.stop} />
      </div>
    </div>
  );
}
