/**
 * Tool calls that wait for a person's approval, as the chat store keeps
 * them: the pending calls of a conversation, and the answer sent for one.
 *
 * The run is paused on the server and its stream stays open. An answer is
 * shown at once (the part is marked `sending`), then confirmed by the
 * `approval` frame on the run's stream, which every viewer of the run gets;
 * if the server does not record it, the part goes back to pending with the
 * reason in `error` (or to expired, when the run stopped waiting).
 */
import { APPROVAL_EXPIRED, toChatError, type ChatError, type ChatMessage, type ChatState } from "./chatState.js";
import { decided, updateApproval, type ApprovalPart } from "./parts.js";
import type { ChatTransport } from "./transport.js";

/** A tool call waiting for an answer, and the run that waits for it. */
export interface PendingApproval {
  /** The run to answer (`approve(runId, ...)`); undefined while the server has not named it yet. */
  readonly runId: string | undefined;
  /** The answer it belongs to. */
  readonly messageId: string;
  readonly callId: string;
  readonly name: string;
  /** The call's JSON arguments. */
  readonly arguments: string;
  /** Unix seconds: when the run stops waiting. */
  readonly expiresAt: number | undefined;
}

/** The calls of the conversation still waiting for an answer (answers in flight are not). */
export function pendingApprovals(state: ChatState): PendingApproval[] {
  const pending: PendingApproval[] = [];
  for (const message of state.messages) {
    if (message.role !== "assistant" || message.parts === undefined) continue;
    const runId = message.runId ?? (message.status === "streaming" ? state.runId : undefined);
    for (const part of message.parts) {
      if (part.type !== "approval" || part.state !== "pending") continue;
      const { callId, name, expiresAt } = part;
      pending.push({ runId, messageId: message.id, callId, name, arguments: part.arguments, expiresAt });
    }
  }
  return pending;
}

/** `messages` with the approval part of `callId` changed, or undefined when no message has one. */
export function patchApproval(
  messages: readonly ChatMessage[],
  callId: string,
  update: (part: ApprovalPart) => ApprovalPart,
): ChatMessage[] | undefined {
  for (let index = messages.length - 1; index >= 0; index -= 1) {
    const message = messages[index];
    if (message?.parts === undefined) continue;
    const parts = message.parts.slice();
    if (!updateApproval(parts, callId, update)) continue;
    const next = messages.slice();
    next[index] = { ...message, parts };
    return next;
  }
  return undefined;
}

function findApproval(messages: readonly ChatMessage[], callId: string): ApprovalPart | undefined {
  for (let index = messages.length - 1; index >= 0; index -= 1) {
    const parts = messages[index]?.parts ?? [];
    for (let at = parts.length - 1; at >= 0; at -= 1) {
      const part = parts[at];
      if (part?.type === "approval" && part.callId === callId) return part;
    }
  }
  return undefined;
}

/** What answering needs of the store. */
export interface ApprovalHost {
  messages(): readonly ChatMessage[];
  setMessages(messages: readonly ChatMessage[]): void;
  readonly transport: ChatTransport;
  readonly userId: string | undefined;
}

export interface ApprovalAnswer {
  readonly runId: string;
  readonly callId: string;
  readonly approved: boolean;
  readonly reason?: string;
}

/** The part after a refused answer, unless the run's stream has told the decision meanwhile. */
function refused(part: ApprovalPart, error: ChatError): ApprovalPart {
  if (part.sending !== true) return part;
  const { sending: _sending, reason: _reason, ...rest } = part;
  const expired = error.code === APPROVAL_EXPIRED;
  return { ...rest, state: expired ? "expired" : "pending", error: error.message };
}

/**
 * Send `answer`; resolves with null once the server has recorded it, or
 * with the error shown on the call (it never rejects). A call already
 * answered here is not answered again.
 */
export async function answerApproval(host: ApprovalHost, answer: ApprovalAnswer): Promise<ChatError | null> {
  const { runId, callId, approved } = answer;
  const reason = answer.reason?.trim() || undefined;
  const part = findApproval(host.messages(), callId);
  if (part !== undefined && (part.state !== "pending" || part.sending === true)) return null;
  const patch = (update: (part: ApprovalPart) => ApprovalPart) => {
    const messages = patchApproval(host.messages(), callId, update);
    if (messages !== undefined) host.setMessages(messages);
  };
  patch((current) => ({ ...decided(current, approved, reason), sending: true }));
  try {
    if (host.transport.approve === undefined) throw new Error("This chat's transport cannot answer tool approvals.");
    await host.transport.approve({ runId, callId, approved, reason, userId: host.userId });
  } catch (cause) {
    const error = toChatError(cause);
    patch((current) => refused(current, error));
    return error;
  }
  patch((current) => {
    if (current.sending !== true) return current;
    const { sending: _sending, ...rest } = current;
    return rest;
  });
  return null;
}
