// The usage example of @tokenrelay/react's README, as an app writes it.
import { MessageList, useStreamingChat } from "@tokenrelay/react";
import { useState } from "react";

export function Chat({ api, userId }: { api: string; userId?: string }) {
  const { messages, isLoading, error, sendMessage, stop, retry } = useStreamingChat(api, { userId });
  const [draft, setDraft] = useState("");
  return (
    <>
      <MessageList messages={messages} />
      {error && (
        <p role="alert">
          {error.message} <button onClick={() => void retry()}>Retry</button>
        </p>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void sendMessage(draft);
          setDraft("");
        }}
      >
        <input aria-label="Message" value={draft} onChange={(e) => setDraft(e.target.value)} />
        {isLoading ? (
          <button type="button" onClick={stop}>
            Stop
          </button>
        ) : (
          <button>Send</button>
        )}
      </form>
    </>
  );
}
