/**
 * The chat page's state beyond the conversation on screen: signing in, the
 * sidebar's list, opening a conversation (and picking up its running
 * answer), deleting one, and remembering what a reload needs (session.ts).
 */
import { useCallback, useEffect, useRef, useState } from "react";
import {
  deleteConversation,
  listConversations,
  loadConversation,
  type ChatState,
  type ChatStore,
  type ConversationsOptions,
  type ConversationSummary,
} from "@tokenrelay/client";
import { hashConversation, rememberedRun, rememberRun, saveToken, setHashConversation } from "./session";

/** Why the page asks for a token: none was given, or the one given was refused. */
export type SignInReason = "needed" | "invalid";

/** A `ChatStreamError` or a store's `ChatError` alike: both carry the status and the server's code. */
function signInReason(error: unknown): SignInReason | null {
  if (typeof error !== "object" || error === null || !("status" in error) || error.status !== 401) return null;
  return "code" in error && error.code === "invalid_token" ? "invalid" : "needed";
}

export interface Auth {
  signIn: SignInReason | null;
  /** Route a failure: a 401 asks for a token; anything else is returned as a message to show. */
  handle: (error: unknown) => string | null;
  submitToken: (token: string) => void;
}

export function useAuth(onSignedIn: () => void): Auth {
  const [signIn, setSignIn] = useState<SignInReason | null>(null);
  const handle = useCallback((error: unknown) => {
    const reason = signInReason(error);
    if (reason !== null) setSignIn(reason);
    if (reason !== null) return null;
    return error instanceof Error ? error.message : "Something went wrong.";
  }, []);
  const submitToken = (token: string) => {
    saveToken(token.trim() || undefined);
    setSignIn(null);
    onSignedIn();
  };
  return { signIn, handle, submitToken };
}

export interface ConversationList {
  items: readonly ConversationSummary[];
  error: string | null;
  refresh: () => Promise<void>;
}

export function useConversationList(api: ConversationsOptions, handle: Auth["handle"]): ConversationList {
  const [items, setItems] = useState<readonly ConversationSummary[]>([]);
  const [error, setError] = useState<string | null>(null);
  const refresh = useCallback(async () => {
    try {
      setItems(await listConversations(api));
      setError(null);
    } catch (cause) {
      setError(handle(cause));
    }
  }, [api, handle]);
  return { items, error, refresh };
}

/**
 * Open conversation `id`: its stored messages, then its answer still being
 * written, if any (the server's running row, or the run this browser
 * remembers), followed live from its start. A run that is gone by then has
 * ended: its answer is read from the conversation instead.
 */
async function openConversation(store: ChatStore, api: ConversationsOptions, id: string, current: () => boolean) {
  const loaded = await loadConversation(api, id);
  if (!current()) return;
  if (loaded === null) {
    rememberRun(id, undefined);
    if (store.getState().conversationId === id || hashConversation() === id) store.reset();
    setHashConversation(undefined);
    return;
  }
  store.load(id, loaded.messages);
  setHashConversation(id);
  const runId = loaded.runningRunId ?? rememberedRun(id);
  if (runId === undefined) return;
  if (loaded.messages.some((message) => message.runId === runId)) {
    rememberRun(id, undefined); // it ended and its answer is stored
    return;
  }
  await store.resume(runId);
  const state = store.getState();
  if (current() && state.conversationId === id && state.error?.status === 404) {
    rememberRun(id, undefined);
    const again = await loadConversation(api, id);
    if (current() && again !== null) store.load(id, again.messages);
  }
}

export interface Navigation {
  open: (id: string) => Promise<void>;
  remove: (id: string) => Promise<void>;
}

export function useNavigation(store: ChatStore, api: ConversationsOptions, handle: Auth["handle"], list: ConversationList): Navigation {
  // Only the last conversation asked for is shown, however the loads finish.
  const sequence = useRef(0);
  const open = useCallback(
    async (id: string) => {
      const mine = (sequence.current += 1);
      try {
        await openConversation(store, api, id, () => sequence.current === mine);
      } catch (error) {
        handle(error);
      }
    },
    [store, api, handle],
  );
  const remove = useCallback(
    async (id: string) => {
      try {
        await deleteConversation(api, id);
      } catch (error) {
        handle(error);
        return;
      }
      rememberRun(id, undefined);
      if (store.getState().conversationId === id) {
        store.load(undefined, []);
        setHashConversation(undefined);
      }
      await list.refresh();
    },
    [store, api, handle, list],
  );
  return { open, remove };
}

/** Keep the URL and the remembered run in step with the store; refresh the list when a conversation changes. */
export function useRemember(store: ChatStore, chat: Pick<ChatState, "conversationId" | "runId" | "status">, list: ConversationList, navigation: Navigation): void {
  const { conversationId, runId, status } = chat;
  useEffect(() => {
    if (conversationId !== undefined) setHashConversation(conversationId);
    if (conversationId !== undefined && runId !== undefined) rememberRun(conversationId, runId);
  }, [conversationId, runId]);
  const { refresh } = list;
  useEffect(() => {
    // Idle: the answer finished or was stopped, so there is nothing to pick up (after an error there may be).
    if (conversationId !== undefined && status === "idle") rememberRun(conversationId, undefined);
    if (status !== "submitted") void refresh();
  }, [conversationId, status, refresh]);
  // Start where the URL says, and follow the URL when it is edited (back, forward, a pasted link).
  const { open } = navigation;
  useEffect(() => {
    const follow = () => {
      const id = hashConversation();
      if (id !== undefined && id !== store.getState().conversationId) void open(id);
    };
    follow();
    window.addEventListener("hashchange", follow);
    return () => window.removeEventListener("hashchange", follow);
  }, [store, open]);
}
