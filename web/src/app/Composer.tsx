import { useLayoutEffect, type FormEvent, type KeyboardEvent, type RefObject } from "react";

/** Grow the textarea with its content, up to the CSS max-height. */
export function useAutoGrow(inputRef: RefObject<HTMLTextAreaElement | null>, draft: string): void {
  useLayoutEffect(() => {
    const input = inputRef.current;
    if (input === null) return;
    // CSSOM, not a style attribute: allowed under a strict Content-Security-Policy.
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight}px`;
  }, [inputRef, draft]);
}

export interface ComposerProps {
  draft: string;
  setDraft: (draft: string) => void;
  inputRef: RefObject<HTMLTextAreaElement | null>;
  isLoading: boolean;
  submit: () => void;
  stop: () => void;
}

export function Composer({ draft, setDraft, inputRef, isLoading, submit, stop }: ComposerProps) {
  const onSubmit = (event: FormEvent) => {
    event.preventDefault();
    // A submit while an answer streams (Enter, or a click that landed as the buttons swapped) never sends.
    if (!isLoading) submit();
  };
  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    // Enter sends, Shift+Enter is a newline; never while an IME is composing.
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      if (!isLoading) submit();
    }
  };
  return (
    <form className="composer" onSubmit={onSubmit}>
      <label htmlFor="message" className="visually-hidden">
        Message
      </label>
      <textarea
        id="message"
        ref={inputRef}
        value={draft}
        onChange={(event) => setDraft(event.target.value)}
        onKeyDown={onKeyDown}
        placeholder="Message tokenrelay (Enter to send, Shift+Enter for a new line)"
        rows={1}
        autoFocus
      />
      {/* Keyed: React must not turn the Stop button into the submit button in the middle of its click, which
          would let the click's default action submit the draft. */}
      {isLoading ? (
        <button key="stop" type="button" className="button button-stop" onClick={stop}>
          Stop
        </button>
      ) : (
        <button key="send" type="submit" className="button button-primary" disabled={draft.trim() === ""}>
          Send
        </button>
      )}
    </form>
  );
}
