import { useState, type FormEvent } from "react";
import type { ConversationSummary } from "@tokenrelay/client";
import type { SignInReason } from "./useChatPage";

export interface SidebarProps {
  conversations: readonly ConversationSummary[];
  currentId: string | undefined;
  error: string | null;
  onOpen: (id: string) => void;
  onNew: () => void;
  onDelete: (id: string) => void;
}

export function Sidebar({ conversations, currentId, error, onOpen, onNew, onDelete }: SidebarProps) {
  return (
    <nav className="sidebar" aria-label="Conversations">
      <div className="brand">
        <span className="brand-mark" aria-hidden="true" />
        <h1>tokenrelay</h1>
      </div>
      <button type="button" className="button new-chat" onClick={onNew}>
        New chat
      </button>
      {error !== null ? <p className="sidebar-error">{error}</p> : null}
      <ul className="conversation-list">
        {conversations.map((conversation) => (
          <li key={conversation.id} className="conversation-item" aria-current={conversation.id === currentId || undefined}>
            <button type="button" className="conversation-open" onClick={() => onOpen(conversation.id)}>
              {conversation.title || "Untitled"}
            </button>
            <button
              type="button"
              className="conversation-delete"
              aria-label={`Delete “${conversation.title || "Untitled"}”`}
              onClick={() => onDelete(conversation.id)}
            >
              ×
            </button>
          </li>
        ))}
      </ul>
    </nav>
  );
}

export interface SignInProps {
  reason: SignInReason;
  onSubmit: (token: string) => void;
}

/** Asked for when the server answers 401: the token is kept for this tab's session only. */
export function SignIn({ reason, onSubmit }: SignInProps) {
  const [token, setToken] = useState("");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (token.trim() !== "") onSubmit(token);
  };
  return (
    <form className="sign-in" onSubmit={submit} aria-label="Sign in">
      <p className="sign-in-text">
        {reason === "invalid" ? "That access token was not accepted. Try another." : "This server needs an access token."}
      </p>
      <label htmlFor="access-token">Access token</label>
      <input
        id="access-token"
        type="password"
        autoComplete="off"
        value={token}
        onChange={(event) => setToken(event.target.value)}
        autoFocus
      />
      <button type="submit" className="button button-primary" disabled={token.trim() === ""}>
        Sign in
      </button>
    </form>
  );
}
