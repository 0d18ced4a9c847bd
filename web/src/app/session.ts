/**
 * What the chat page keeps between loads, and where:
 *
 * - the bearer token, in sessionStorage: kept for this tab's session, gone
 *   when it closes, never in a URL;
 * - the open conversation's id, in the URL hash (`#c=<id>`): a reload
 *   reopens it, and each tab can show its own;
 * - the run still writing a conversation's answer, in localStorage: a
 *   reload (or another tab) picks the answer up where it is. The server
 *   stores an answer when it ends, so until then only the page knows its run.
 *
 * Storage can be unavailable (privacy modes, a full quota): every access
 * fails soft, and the page then simply forgets.
 */

const TOKEN_KEY = "tokenrelay.token";
const RUN_PREFIX = "tokenrelay.run.";
const HASH_PREFIX = "#c=";

function storage(kind: "local" | "session"): Storage | undefined {
  try {
    return kind === "local" ? globalThis.localStorage : globalThis.sessionStorage;
  } catch {
    return undefined;
  }
}

function read(kind: "local" | "session", key: string): string | undefined {
  try {
    return storage(kind)?.getItem(key) ?? undefined;
  } catch {
    return undefined;
  }
}

function write(kind: "local" | "session", key: string, value: string | undefined): void {
  try {
    if (value === undefined) storage(kind)?.removeItem(key);
    else storage(kind)?.setItem(key, value);
  } catch {
    // Not stored: the page forgets it at the next load, nothing worse.
  }
}

export function savedToken(): string | undefined {
  return read("session", TOKEN_KEY) || undefined;
}

export function saveToken(token: string | undefined): void {
  write("session", TOKEN_KEY, token);
}

/** The request headers for the saved token (none without one). */
export function authHeaders(): Record<string, string> {
  const token = savedToken();
  return token === undefined ? {} : { Authorization: `Bearer ${token}` };
}

export function hashConversation(): string | undefined {
  const hash = globalThis.location?.hash ?? "";
  if (!hash.startsWith(HASH_PREFIX)) return undefined;
  try {
    return decodeURIComponent(hash.slice(HASH_PREFIX.length)) || undefined;
  } catch {
    return undefined;
  }
}

/** Show `id` in the URL without a navigation (and without a hashchange event). */
export function setHashConversation(id: string | undefined): void {
  if (id === hashConversation()) return;
  const url = new URL(globalThis.location.href);
  url.hash = id === undefined ? "" : `${HASH_PREFIX.slice(1)}${encodeURIComponent(id)}`;
  globalThis.history.replaceState(globalThis.history.state, "", url);
}

export function rememberedRun(conversationId: string): string | undefined {
  return read("local", RUN_PREFIX + conversationId);
}

export function rememberRun(conversationId: string, runId: string | undefined): void {
  write("local", RUN_PREFIX + conversationId, runId);
}
