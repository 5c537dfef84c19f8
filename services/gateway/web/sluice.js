// sluice.js: the browser SDK of sluice. One ES module, no dependencies, no build step.
//
//   import { Sluice } from "/sdk/sluice.js";
//   const sluice = new Sluice();                      // the gateway that served the page
//   const stream = await sluice.stream({ prompt: "hi" }, {
//     status: (s) => ..., tokens: (batch) => ..., done: (d) => ..., error: (e) => ...,
//     reconnecting: (r) => ...,
//   });
//   stream.cancel();
//
// Tokens are read with EventSource, whose native Last-Event-ID makes the browser
// resume a dropped connection at the next token; a frame seen before the drop is
// dropped. `tokens` is called at most once per animation frame with every token that
// arrived since, so a page that re-renders on it never renders more often than the
// screen refreshes. Each token has a `channel` ("text" unless the server says
// otherwise), so new kinds of content reach pages as data, not as new callbacks;
// `stream.answer` adds them up by channel (text, reasoning, tool calls by index).
// Cancel, pace and feedback go over one control WebSocket per page.

const RETRYABLE_HTTP = new Set([429, 502, 503, 504]);
const MAX_MANUAL_RETRIES = 8;

/** A refusal or failure: `type` is the contract's error type, `retryable` whether to try again. */
export class SluiceError extends Error {
  constructor(type, message, { status = null, retryable = false } = {}) {
    super(`${type}: ${message}`);
    this.name = "SluiceError";
    this.type = type;
    this.status = status;
    this.retryable = retryable;
  }
}

/** Grows an id or name by a part, unless the part repeats it (some servers send it on every fragment). */
function grown(whole, part) {
  return part && part !== whole ? whole + part : whole;
}

/**
 * One answer added up by channel as its tokens arrive: `text`, `reasoning`, and `calls`
 * (tool calls by index, each `{index, id, name, arguments}`). Each fragment is appended
 * once and nothing is parsed, so the work is linear in the answer's length; the
 * arguments are JSON only when `done` says the call is complete.
 */
export class Answer {
  constructor() {
    this.text = "";
    this.reasoning = "";
    this.calls = new Map();
  }

  /** Adds one token to its channel; returns the tool call it extended, else null. */
  add(token) {
    if (token.channel === "text") this.text += token.text;
    else if (token.channel === "reasoning") this.reasoning += token.text;
    if (token.channel !== "tool_call") return null;
    const { index, id, name } = token.tool_call;
    let call = this.calls.get(index);
    if (!call) {
      call = { index, id: "", name: "", arguments: "" };
      this.calls.set(index, call);
    }
    call.id = grown(call.id, id);
    call.name = grown(call.name, name);
    call.arguments += token.text;
    return call;
  }

  /** The tool calls so far, by index, shaped like `done.tool_calls`. */
  toolCalls() {
    return [...this.calls.values()].sort((a, b) => a.index - b.index)
      .map((call) => ({ id: call.id, name: call.name, arguments: call.arguments }));
  }
}

/** Calls `fn` once on the next animation frame, however often it is scheduled before. */
class FrameBatcher {
  constructor(fn) {
    this.fn = fn;
    this.pending = false;
  }
  schedule() {
    if (this.pending) return;
    this.pending = true;
    const run = () => { this.pending = false; this.fn(); };
    if (typeof requestAnimationFrame === "function" && document.visibilityState !== "hidden") {
      requestAnimationFrame(run);
    } else {
      setTimeout(run, 16);
    }
  }
  flushNow() {
    this.pending = false;
    this.fn();
  }
}

/** The page's one control WebSocket: each frame gets a `ref` and resolves with its `ack`. */
export class ControlChannel {
  constructor(url) {
    this.url = url;
    this.socket = null;
    this.opening = null;
    this.pending = new Map();
    this.nextRef = 1;
  }

  open() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) return Promise.resolve(this.socket);
    if (this.opening) return this.opening;
    this.opening = new Promise((resolve, reject) => {
      const socket = new WebSocket(this.url);
      socket.onopen = () => { this.socket = socket; this.opening = null; resolve(socket); };
      socket.onerror = () => { this.opening = null; reject(new SluiceError("unavailable", "control socket failed", { retryable: true })); };
      socket.onclose = () => this.failPending();
      socket.onmessage = (message) => this.receive(message.data);
    });
    return this.opening;
  }

  async send(type, fields) {
    const socket = await this.open();
    const ref = `r${this.nextRef++}`;
    const answer = new Promise((resolve, reject) => this.pending.set(ref, { resolve, reject }));
    socket.send(JSON.stringify({ type, ref, ...fields }));
    return answer;
  }

  receive(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    const waiter = this.pending.get(frame.ref);
    if (!waiter) return;
    this.pending.delete(frame.ref);
    if (frame.type === "error") {
      waiter.reject(new SluiceError(frame.error.type, frame.error.message));
    } else {
      waiter.resolve(frame);
    }
  }

  failPending() {
    this.socket = null;
    for (const waiter of this.pending.values()) {
      waiter.reject(new SluiceError("unavailable", "control socket closed", { retryable: true }));
    }
    this.pending.clear();
  }
}

/** One stream being read. `cancel()` freezes its tokens at once and asks the server to stop. */
export class Stream {
  constructor(sluice, created, handlers) {
    this.sluice = sluice;
    this.id = created.id;
    this.eventsUrl = created.events_url;
    this.handlers = handlers;
    this.lastSeq = 0;
    this.queue = [];
    this.frozen = false;
    this.ended = false;
    this.source = null;
    this.retries = 0;
    this.answer = new Answer();
    this.batcher = new FrameBatcher(() => this.deliver());
    this.connect(false);
  }

  /** Stop the generation: no token reaches the page after this call; `done` still comes. */
  cancel() {
    this.frozen = true;
    this.queue = [];
    return this.sluice.control.send("cancel", { stream_id: this.id });
  }

  /** Cap how many frames per second this stream sends (the server coalesces the rest). */
  pace(maxEventsPerS) {
    return this.sluice.control.send("pace", { stream_id: this.id, max_events_per_s: maxEventsPerS });
  }

  /** Rate the answer: 1 or -1, with an optional comment. */
  feedback(rating, comment = "") {
    return this.sluice.control.send("feedback", { stream_id: this.id, rating, comment });
  }

  /** Stop reading without cancelling (the server abandons it if no one comes back). */
  close() {
    this.ended = true;
    if (this.source) this.source.close();
  }

  connect(resume) {
    let url = this.eventsUrl;
    if (resume && this.lastSeq) url += `${url.includes("?") ? "&" : "?"}last_event_id=${this.lastSeq}`;
    const source = new EventSource(url);
    this.source = source;
    source.addEventListener("open", () => { this.retries = 0; });
    source.addEventListener("status", (e) => this.emit("status", JSON.parse(e.data)));
    source.addEventListener("token", (e) => this.onToken(JSON.parse(e.data)));
    source.addEventListener("done", (e) => this.finish(JSON.parse(e.data)));
    source.addEventListener("reconnect", () => this.reconnecting("the server is restarting"));
    source.addEventListener("error", (e) => this.onError(source, e));
  }

  onToken(token) {
    if (this.frozen || token.seq <= this.lastSeq) return;
    this.lastSeq = token.seq;
    this.queue.push({ channel: "text", ...token });
    this.batcher.schedule();
  }

  deliver() {
    if (this.frozen || !this.queue.length) return;
    const batch = this.queue;
    this.queue = [];
    for (const token of batch) this.answer.add(token);
    this.emit("tokens", batch);
  }

  finish(done) {
    this.batcher.flushNow();
    this.close();
    this.emit("done", done);
  }

  onError(source, event) {
    if (this.ended || source !== this.source) return;
    if (event.data) {  // the server's own `error` event
      const error = JSON.parse(event.data);
      source.close();
      if (error.retryable) return this.retry(error.message);
      this.ended = true;
      return this.emit("error", new SluiceError(error.type, error.message));
    }
    if (source.readyState === EventSource.CONNECTING) {
      return this.reconnecting("the connection dropped");  // the browser resumes by itself
    }
    this.retry("the connection was refused");  // EventSource gave up (an HTTP error): resume by hand
  }

  retry(reason) {
    this.source.close();
    this.retries += 1;
    if (this.retries > MAX_MANUAL_RETRIES) {
      this.ended = true;
      return this.emit("error", new SluiceError("disconnected", `gave up resuming: ${reason}`, { retryable: true }));
    }
    this.reconnecting(reason);
    setTimeout(() => { if (!this.ended) this.connect(true); }, Math.min(250 * 2 ** this.retries, 5000));
  }

  reconnecting(reason) {
    this.emit("reconnecting", { after: this.lastSeq, reason });
  }

  emit(name, value) {
    const handler = this.handlers[name];
    if (handler) handler(value, this);
  }
}

/** The API of one sluice gateway. */
export class Sluice {
  constructor({ baseUrl = location.origin, apiKey = null } = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.apiKey = apiKey;
    const control = new URL("/v1/control", this.baseUrl);
    control.protocol = control.protocol === "https:" ? "wss:" : "ws:";
    if (apiKey) control.searchParams.set("api_key", apiKey);
    this.control = new ControlChannel(control.href);
  }

  /** POST /v1/streams with `body`; resolves with its 201 answer or rejects with SluiceError. */
  async create(body) {
    const headers = { "Content-Type": "application/json" };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    const answer = await fetch(`${this.baseUrl}/v1/streams`, { method: "POST", headers, body: JSON.stringify(body) });
    const payload = await answer.json().catch(() => ({}));
    if (answer.status !== 201) {
      const error = payload.error || { type: "http_error", message: `HTTP ${answer.status}` };
      throw new SluiceError(error.type, error.message, { status: answer.status, retryable: RETRYABLE_HTTP.has(answer.status) });
    }
    return payload;
  }

  /** Create a stream and read it; `handlers` are status, tokens, done, error, reconnecting. */
  async stream(body, handlers = {}) {
    return new Stream(this, await this.create(body), handlers);
  }
}
