// @vitest-environment jsdom
// The app's own component, built on @tokenrelay/react as installed from its tarball, against the real server.
import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { afterEach, describe, expect, inject, it } from "vitest";
import { Chat } from "../src/Chat";

const baseUrl = inject("baseUrl");
const api = `${baseUrl}/api/chat/stream`;

type Health = { active_runs: number; backend_info: { streams_started: number; streams_cancelled: number } };

async function health(): Promise<Health> {
  return (await (await fetch(`${baseUrl}/api/health`)).json()) as Health;
}

function answer(): HTMLElement | null {
  return document.querySelector<HTMLElement>('article[data-role="assistant"]');
}

function send(text: string): void {
  fireEvent.change(screen.getByLabelText("Message"), { target: { value: text } });
  fireEvent.click(screen.getByRole("button", { name: "Send" }));
}

afterEach(async () => {
  cleanup();
  // Every test leaves the server idle.
  await waitFor(async () => expect((await health()).active_runs).toBe(0), { timeout: 10_000 });
});

describe("a Vite + React app using the packages from npm", () => {
  it("renders the answer while it streams, then the finished answer", async () => {
    render(<Chat api={api} userId="npm-stream" />);
    act(() => send("hello from the package"));
    expect(screen.getByText("hello from the package").closest("article")?.dataset.role).toBe("user");

    // Part of the answer is on screen while the run is still writing it...
    await waitFor(() => {
      expect(answer()?.dataset.status).toBe("streaming");
      expect(answer()?.textContent).toContain("You said: hello from the package.");
    }, { timeout: 10_000, interval: 10 });
    const partial = answer()?.textContent ?? "";
    // ...and all of it once the done frame is in.
    await waitFor(() => expect(answer()?.dataset.status).toBe("done"), { timeout: 20_000 });
    const full = answer()?.textContent ?? "";
    expect(answer()?.dataset.finish).toBe("stop");
    expect(full.length).toBeGreaterThan(partial.length);
    expect(full).toContain("Tokens stream to you the moment they are produced.");
    expect(screen.getByRole("button", { name: "Send" })).toBeTruthy();
  });

  it("Stop cancels the run on the server", async () => {
    const before = await health();
    render(<Chat api={api} userId="npm-stop" />);
    act(() => send("stop me"));
    await waitFor(() => expect(answer()?.textContent).toContain("You said: stop me."), { timeout: 10_000, interval: 10 });
    expect(answer()?.dataset.status).toBe("streaming");

    fireEvent.click(screen.getByRole("button", { name: "Stop" }));

    await waitFor(() => expect(answer()?.dataset.status).toBe("cancelled"), { timeout: 10_000 });
    expect(answer()?.textContent).toContain("Stopped");
    await waitFor(async () => {
      const now = await health();
      expect(now.active_runs).toBe(0);
      expect(now.backend_info.streams_cancelled).toBe(before.backend_info.streams_cancelled + 1);
    }, { timeout: 10_000 });
  });

  it("shows the server's refusal of a bad request", async () => {
    render(<Chat api={api} userId={"x".repeat(500)} />);
    act(() => send("hello"));
    const alert = await screen.findByRole("alert", {}, { timeout: 10_000 });
    expect(alert.textContent).toMatch(/user_id/);
  });
});
