/**
 * `useStreamingChat`: the React binding of the chat store.
 *
 *   const { messages, isLoading, error, sendMessage, stop, retry } = useStreamingChat("/api/chat/stream");
 *
 * The store (createChatStore, from @tokenrelay/client) does the work; this hook owns one
 * store per component, subscribes with `useSyncExternalStore` (tear-free
 * under concurrent rendering) and aborts the request on unmount.
 */
import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import {
  createChatStore,
  pendingApprovals,
  type ChatError,
  type ChatMessage,
  type ChatStatus,
  type ChatStore,
  type ChatStoreOptions,
  type PendingApproval,
} from "@tokenrelay/client";

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
  /** The tool calls waiting for a person's approval (the run is paused until each is answered). */
  pendingApprovals: readonly PendingApproval[];
  /** Let tool call `callId` run. Resolves with null once recorded, or with the error (also shown on the call). */
  approve: (callId: string) => Promise<ChatError | null>;
  /** Refuse tool call `callId`; `reason` goes to the model with the denial. */
  deny: (callId: string, reason?: string) => Promise<ChatError | null>;
}

const NO_RUN: ChatError = { kind: "network", message: "The run of this tool call is not known yet.", retryable: true };

/** `approve` and `deny` for `store`: the run is the one that waits for the call. */
function approvalActions(store: ChatStore) {
  const answer = (callId: string, approved: boolean, reason?: string) => {
    const state = store.getState();
    const runId = pendingApprovals(state).find((pending) => pending.callId === callId)?.runId ?? state.runId;
    return runId === undefined ? Promise.resolve(NO_RUN) : store.approve(runId, callId, approved, reason);
  };
  return {
    approve: (callId: string) => answer(callId, true),
    deny: (callId: string, reason?: string) => answer(callId, false, reason),
  };
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
  const actions = useMemo(() => approvalActions(store), [store]);
  const pending = useMemo(() => pendingApprovals(state), [state]);

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
      pendingApprovals: pending,
      approve: actions.approve,
      deny: actions.deny,
    }),
    [state, store, pending, actions],
  );
}
