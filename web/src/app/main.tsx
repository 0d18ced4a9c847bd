import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { createParser, resumeChat, streamChat, streamChatEventSource } from "@tokenrelay/client";
import { App } from "./App";
import "./styles.css";

declare global {
  interface Window {
    /** The client library, for the browser console and end-to-end tests. */
    tokenrelay?: {
      createParser: typeof createParser;
      streamChat: typeof streamChat;
      streamChatEventSource: typeof streamChatEventSource;
      resumeChat: typeof resumeChat;
    };
  }
}

window.tokenrelay = { createParser, streamChat, streamChatEventSource, resumeChat };

const root = document.getElementById("root");
if (root === null) throw new Error("#root is missing from index.html");

createRoot(root).render(
  <StrictMode>
    <App apiBase="api" />
  </StrictMode>,
);
