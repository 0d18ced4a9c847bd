/**
 * `useStreamingChat`: the React binding of the chat store.
 *
 *   const { messages, isLoading, error, sendMessage, stop, retry } = useStreamingChat("/api/chat/stream");
 *
 * The store (src/client/chatStore.ts) does the work; this hook owns one
 * store per component, subscribes with `useSyncExternalStore` (tear-free
 * under concurrent rendering) and aborts the request on unmount.
 */
import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import {
  createChatStore,
  type ChatError,
  type ChatMessage,
  type ChatStatus,
  type ChatStore,
  type ChatStoreOptions,
} from "../client/chatStore";

export interface UseStreamingChatOptions extends Omit<ChatStoreOptions, "api"> {
  /** Use this store instead of creating one (to share a conversation between components). */
  store?: ChatStore;
}

export interface UseStreamingChatResult {
  messages: readonly ChatMessage[];
  /** True from sending until the answer finishes, stops or fails. */
  isLoading: boolean;
  status: ChatStatus;
  error: ChatError | null;
  conversationId: string | undefined;
  /** The run being received, once the server has named it. */
  runId: string | undefined;
  /** Send a message. Ignored while an answer is in progress. */
  sendMessage: (text: string) => Promise<void>;
  /** Stop the answer in progress: the server is asked to cancel the run, and the connection closes. */
  stop: () => void;
  /** After an error: follow the answer again if its connection was lost, else send the failed request again. */
  retry: () => Promise<void>;
  /** Replace the last answer with a new one. */
  regenerate: () => Promise<void>;
  /** Start a new conversation. */
  reset: () => void;
  /** Show another conversation (e.g. read with `loadConversation`); see `ChatStore.load`. */
  load: ChatStore["load"];
  /** Follow a run still being written (after a reload); see `ChatStore.resume`. */
  resume: ChatStore["resume"];
}

export function useStreamingChat(apiUrl: string, options: UseStreamingChatOptions = {}): UseStreamingChatResult {
  const { store: externalStore, ...storeOptions } = options;
  const [ownStore] = useState(() => createChatStore({ ...storeOptions, api: apiUrl }));
  const store = externalStore ?? ownStore;

  // Keep callbacks and settings current without recreating the store.
  // Requests start from event handlers, after effects have run.
  useEffect(() => {
    if (externalStore === undefined) store.setOptions({ ...storeOptions, api: apiUrl });
  });

  // Stop on unmount: the server is asked to cancel the run. The store stays usable,
  // which keeps React StrictMode's mount/unmount/mount cycle harmless.
  useEffect(() => {
    if (externalStore !== undefined) return undefined;
    return () => store.stop();
  }, [store, externalStore]);

  const state = useSyncExternalStore(store.subscribe, store.getState, store.getState);

  return useMemo(
    () => ({
      messages: state.messages,
      isLoading: state.status === "submitted" || state.status === "streaming",
      status: state.status,
      error: state.error,
      conversationId: state.conversationId,
      runId: state.runId,
      sendMessage: store.sendMessage,
      stop: store.stop,
      retry: store.retry,
      regenerate: store.regenerate,
      reset: store.reset,
      load: store.load,
      resume: store.resume,
    }),
    [state, store],
  );
}
