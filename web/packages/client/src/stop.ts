// Make the Vercel AI SDK's useChat Stop cancel the run on the tokenrelay server.
//
// useChat's stop() only aborts its fetch, and to tokenrelay a closed connection is a drop, not a Stop: the run keeps
// going for the detach grace so that the client can resume it. This helper gives DefaultChatTransport a fetch that
// remembers each answer's run id (the X-Run-Id header), and a cancel() that asks the server to stop that run
// (POST /api/runs/{id}/cancel). Call both on Stop:
//
//   import { tokenrelayStop } from "@tokenrelay/client";
//
//   const stopper = useMemo(() => tokenrelayStop("http://127.0.0.1:8000"), []);
//   const { stop } = useChat({ transport: new DefaultChatTransport({ api: ".../api/chat", fetch: stopper.fetch }) });
//   <button onClick={() => { void stop(); void stopper.cancel(); }}>Stop</button>
//
// A Stop pressed before the server answered still reaches the run: the fetch holds the abort back until the
// response headers (and so the run id) are in, which takes one round trip; a request already aborted is not sent.

export type TokenrelayStop = {
  /** For ``DefaultChatTransport({ fetch })``: a fetch that records the run id of each answer it opens. */
  fetch: typeof globalThis.fetch;
  /** Cancel the run of the latest answer on the server; resolves once the server has it (false: nothing to stop). */
  cancel: () => Promise<boolean>;
};

export type TokenrelayStopOptions = {
  /** Headers for the cancel request, such as ``{ Authorization: "Bearer …" }`` (the transport's own, typically). */
  headers?: HeadersInit | (() => HeadersInit);
  /** The user the answers run as, when the transport's ``api`` URL names one with ``?user_id=``. */
  userId?: string;
  fetch?: typeof globalThis.fetch;
};

export function tokenrelayStop(baseUrl: string, options: TokenrelayStopOptions = {}): TokenrelayStop {
  const send = options.fetch ?? globalThis.fetch;
  let latest: Promise<string | null> = Promise.resolve(null);

  const tracked: typeof globalThis.fetch = (input, init = {}) => {
    const { signal, ...rest } = init;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const inner = new AbortController();
    const response = send(input, { ...rest, signal: inner.signal });
    const runId = response.then(
      (r) => r.headers.get("x-run-id"),
      () => null,
    );
    latest = runId;
    // Abort only once the run id is known, so that cancel() can name the run this request started.
    signal?.addEventListener("abort", () => void runId.then(() => inner.abort(signal.reason)), { once: true });
    return response;
  };

  const cancel = async (): Promise<boolean> => {
    const runId = await latest;
    if (runId === null) return false;
    const headers = typeof options.headers === "function" ? options.headers() : options.headers;
    const user = options.userId === undefined ? "" : `?user_id=${encodeURIComponent(options.userId)}`;
    const url = `${baseUrl.replace(/\/$/, "")}/api/runs/${encodeURIComponent(runId)}/cancel${user}`;
    const response = await send(url, { method: "POST", headers });
    return response.ok && ((await response.json()) as { cancelled?: boolean }).cancelled === true;
  };

  return { fetch: tracked, cancel };
}
