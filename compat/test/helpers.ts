import type { UIMessage } from "ai";
import { inject } from "vitest";

export { eventually } from "./support";

export const baseUrl = inject("baseUrl");
export const api = `${baseUrl}/api/chat`;

let counter = 0;

/** A fresh chat id per test: the server keeps each chat's history. */
export function newChatId(): string {
  counter += 1;
  return `compat-${Date.now().toString(36)}-${counter}`;
}

export function userMessage(text: string, id = `u-${newChatId()}`): UIMessage {
  return { id, role: "user", parts: [{ type: "text", text }] };
}

export function textOf(message: UIMessage | undefined): string {
  return (message?.parts ?? []).map((part) => (part.type === "text" ? part.text : "")).join("");
}

export type Health = {
  active_runs: number;
  backend_info: { streams_started: number; streams_cancelled: number };
};

export async function health(): Promise<Health> {
  const response = await fetch(`${baseUrl}/api/health`);
  return (await response.json()) as Health;
}
