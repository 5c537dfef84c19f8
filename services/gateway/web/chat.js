// chat.js: the gateway's chat page. Everything it does goes through the SDK.
import { Sluice } from "/sdk/sluice.js";
import { render } from "/ui/markdown.js";

const $ = (id) => document.getElementById(id);
const form = $("composer"), prompt = $("prompt"), send = $("send"), stop = $("stop");
const history = $("history"), apiKey = $("api-key"), options = $("options");
let conversation = crypto.randomUUID();
let current = null;   // the turn whose answer is streaming
let editing = null;   // the turn being edited, superseded on send
const DEMO_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string" },
        days: { type: "integer", minimum: 1, maximum: 7 },
        units: { type: "string", enum: ["metric", "imperial"] },
      },
      required: ["city", "days", "units"],
    },
  },
};

apiKey.value = localStorage.getItem("sluice.apiKey") || "";
options.value = localStorage.getItem("sluice.options") || options.value;
const client = () => new Sluice({ apiKey: apiKey.value.trim() || null });
let sluice = client();
apiKey.addEventListener("change", () => {
  localStorage.setItem("sluice.apiKey", apiKey.value.trim());
  sluice = client();
});
options.addEventListener("change", () => localStorage.setItem("sluice.options", options.value));

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** `json` indented by two, or null if it does not parse. */
function indented(json) {
  try { return JSON.stringify(JSON.parse(json), null, 2); } catch { return null; }
}

/** A collapsed "thinking" section that streams the model's reasoning. */
class Reasoning {
  constructor() {
    this.node = element("details", "reasoning");
    this.summary = element("summary", null, "thinking…");
    this.text = element("div", "reasoning-text");
    this.node.append(this.summary, this.text);
    this.node.dataset.state = "streaming";
    this.tokens = 0;
  }

  grow(text, tokens) {
    this.text.append(text);
    this.tokens += tokens;
  }

  end() {
    if (this.node.dataset.state === "done") return;
    this.node.dataset.state = "done";
    this.summary.textContent = `thought · ${this.tokens} tokens`;
  }
}

/** A tool call as it forms: the function's name, then its arguments, raw until `done` completes them. */
class ToolCard {
  constructor(index) {
    this.node = element("div", "tool-call");
    this.node.dataset.index = index;
    const head = element("div", "tool-head");
    this.name = element("span", "tool-name");
    this.status = element("span", "tool-status", "forming…");
    head.append(this.name, this.status);
    this.arguments = element("pre", "tool-arguments");
    this.node.append(head, this.arguments);
  }

  /** Shows the call's name and appends only the new fragments: nothing already shown is redrawn. */
  grow(call, fragments) {
    if (this.name.textContent !== call.name) this.name.textContent = call.name;
    this.arguments.append(fragments);
  }

  /** The call is finished: its arguments as indented JSON, or raw with a warning if they do not parse. */
  complete(call) {
    this.name.textContent = call.name;
    const pretty = indented(call.arguments);
    this.node.dataset.complete = pretty === null ? "invalid" : "true";
    this.status.textContent = pretty === null ? "arguments are not valid JSON" : "complete";
    this.arguments.replaceChildren(pretty ?? call.arguments);
  }

  abandon() {
    if (!this.node.dataset.complete) this.status.textContent = "incomplete";
  }
}

/** One prompt and its answer, with the answer's state shown on it. */
class Turn {
  constructor(text) {
    this.node = element("article", "turn");
    const user = element("div", "user");
    this.prompt = element("div", "prompt-text", text);
    const edit = element("button", "edit", "edit");
    edit.type = "button";
    edit.title = "Edit this prompt and send it again; the new answer supersedes this one";
    edit.addEventListener("click", () => startEdit(this));
    user.append(this.prompt, edit);
    this.answer = element("div", "answer");
    this.state = element("div", "state");
    this.body = element("div", "body");
    this.figures = element("div", "figures");
    const copy = element("button", "copy", "copy");
    copy.type = "button";
    copy.title = "Copy the answer as Markdown";
    copy.addEventListener("click", () => navigator.clipboard.writeText(this.text));
    this.answer.append(this.state, this.body, this.figures, copy);
    this.answer.turn = this;  // the raw Markdown, for the copy button and for tests
    this.node.append(user, this.answer);
    this.reasoning = null;
    this.cards = new Map();
    this.tokens = 0;
    this.sentAt = performance.now();
    this.firstAt = null;
    this.lastAt = null;
    this.stream = null;
    this.setState("sending", "sending…");
  }

  /** The answer text so far (the stream's text channel). */
  get text() {
    return this.stream ? this.stream.answer.text : "";
  }

  setState(state, label) {
    this.answer.dataset.state = state;
    this.state.textContent = label;
  }

  status({ status, position }) {
    if (this.firstAt !== null && status === "running") return this.setState("streaming", "");
    if (status === "queued") {
      this.setState("queued", position ? `queued · position ${position}` : "queued");
    } else if (status === "running") {
      this.setState("thinking", "thinking…");
    }
  }

  /** Shows a frame's batch: reasoning and argument fragments appended, the text re-rendered. */
  tokens_(batch, stream) {
    let text = false, reasoning = "", reasoningTokens = 0;
    const fragments = new Map();
    for (const token of batch) {
      this.tokens += token.n;
      if (token.channel === "text") text = true;
      if (token.channel === "reasoning") {
        reasoning += token.text;
        reasoningTokens += token.n;
      } else if (token.channel === "tool_call") {
        const index = token.tool_call.index;
        fragments.set(index, (fragments.get(index) ?? "") + token.text);
      }
    }
    if (reasoning) this.think(reasoning, reasoningTokens);
    if (text || fragments.size) this.reasoning?.end();
    for (const [index, added] of fragments) this.card(index).grow(stream.answer.calls.get(index), added);
    const now = performance.now();
    if (this.firstAt === null) this.firstAt = now;
    this.lastAt = now;
    if (text) this.body.replaceChildren(...render(this.text));
    if (this.answer.dataset.state !== "streaming") this.setState("streaming", "");
    this.node.scrollIntoView({ block: "end" });
  }

  think(text, tokens) {
    if (!this.reasoning) {
      this.reasoning = new Reasoning();
      this.body.before(this.reasoning.node);
    }
    this.reasoning.grow(text, tokens);
  }

  card(index) {
    let card = this.cards.get(index);
    if (!card) {
      card = new ToolCard(index);
      this.cards.set(index, card);
      this.figures.before(card.node);
    }
    return card;
  }

  /** Each finished call completes its card, matched by id, else by position; the rest stay raw. */
  completeCalls(calls) {
    const shown = [...this.stream.answer.calls.values()];
    const indexes = [...this.cards.keys()].sort((a, b) => a - b);
    calls.forEach((call, position) => {
      const same = shown.find((candidate) => candidate.id && candidate.id === call.id);
      this.card(same ? same.index : indexes[position] ?? position).complete(call);
    });
    for (const card of this.cards.values()) card.abandon();
  }

  done(done) {
    this.reasoning?.end();
    this.completeCalls(done.tool_calls ?? []);
    this.answer.dataset.finishReason = done.finish_reason;
    this.answer.dataset.tokens = done.tokens;
    if (done.ttft_ms != null) this.answer.dataset.ttftMs = done.ttft_ms;
    const labels = { stop: "", length: "stopped at max tokens", cancelled: "stopped",
      superseded: "superseded", abandoned: "abandoned",
      tool_calls: done.tool_calls?.length > 1 ? `answered with ${done.tool_calls.length} tool calls` : "answered with a tool call" };
    const stopped = done.finish_reason === "cancelled" || done.finish_reason === "superseded";
    this.setState(stopped ? done.finish_reason : "done", labels[done.finish_reason] ?? done.finish_reason);
    const parts = [`${done.tokens} tokens`];
    if (this.firstAt !== null) parts.push(`first token ${Math.round(this.firstAt - this.sentAt)} ms`);
    if (this.firstAt !== null && this.lastAt > this.firstAt && this.tokens > 1) {
      parts.push(`${((this.tokens - 1) / ((this.lastAt - this.firstAt) / 1000)).toFixed(1)} tokens/s`);
    }
    if (done.ttft_ms != null) parts.push(`model TTFT ${Math.round(done.ttft_ms)} ms`);
    if (done.cancel_to_stop_ms != null) parts.push(`cancel to stop ${Math.round(done.cancel_to_stop_ms)} ms`);
    this.figures.textContent = parts.join(" · ");
    this.end();
  }

  error(error) {
    this.reasoning?.end();
    for (const card of this.cards.values()) card.abandon();
    this.setState("error", `error: ${error.message}`);
    this.end();
  }

  end() {
    if (current === this) {
      current = null;
      stop.disabled = true;
    }
  }
}

function startEdit(turn) {
  editing = turn;
  prompt.value = turn.prompt.textContent;
  form.classList.add("editing");
  prompt.focus();
}

/** The conversation the model sees: earlier answered turns (not superseded ones), then `text`. */
function messages(text, upTo) {
  const earlier = [];
  for (const node of history.children) {
    if (node === upTo) break;
    const turn = node.querySelector(".answer").turn;
    if (!turn || node.classList.contains("superseded") || !turn.text) continue;
    earlier.push({ role: "user", content: turn.prompt.textContent }, { role: "assistant", content: turn.text });
  }
  return [...earlier, { role: "user", content: text }];
}

/**
 * Request fields from the page's address: `?reasoning=N` has the sim think N tokens
 * first, `?tools=demo` offers the model a demo function (get_weather). The server
 * validates the values; an unknown tools preset is refused here.
 */
function addressFields(search) {
  const params = new URLSearchParams(search);
  const fields = {};
  if (params.has("reasoning")) fields.sim = { reasoning_tokens: Number(params.get("reasoning")) };
  const tools = params.get("tools");
  if (tools === "demo") fields.tools = [DEMO_TOOL];
  else if (tools !== null) throw new Error(`unknown tools preset ${JSON.stringify(tools)} (the page knows "demo")`);
  return fields;
}

/** The settings' JSON fields, then the address's on top (their `sim` fields merged). */
function request(text, upTo) {
  let extra;
  try { extra = options.value.trim() ? JSON.parse(options.value) : {}; } catch (error) {
    throw new Error(`the request fields in settings are not JSON: ${error.message}`);
  }
  if (typeof extra !== "object" || extra === null || Array.isArray(extra)) {
    throw new Error("the request fields in settings must be a JSON object");
  }
  const address = addressFields(location.search);
  const body = { model: "sim", ...extra, ...address };
  if (extra.sim || address.sim) body.sim = { ...extra.sim, ...address.sim };
  return { ...body, messages: messages(text, upTo), conversation_id: conversation, supersede: true };
}

async function submit(text) {
  const upTo = editing ? editing.node : null;
  if (editing) {
    editing.node.classList.add("superseded");
    if (!editing.stream || editing.answer.dataset.state === "done") {
      editing.setState("superseded", "superseded by an edit");
    }
    editing = null;
    form.classList.remove("editing");
  }
  const turn = new Turn(text);
  history.append(turn.node);
  current = turn;
  stop.disabled = false;
  try {
    turn.request = request(text, upTo);
    turn.stream = await sluice.stream(turn.request, {
      status: (s) => turn.status(s),
      tokens: (batch, stream) => turn.tokens_(batch, stream),
      done: (d) => turn.done(d),
      error: (e) => turn.error(e),
      reconnecting: () => turn.setState("reconnecting", "reconnecting…"),
    });
    turn.answer.dataset.streamId = turn.stream.id;
  } catch (error) {
    turn.error(error);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = prompt.value.trim();
  if (!text) return;
  prompt.value = "";
  submit(text);
});
prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});
stop.addEventListener("click", () => {
  const turn = current;
  if (!turn || !turn.stream) return;
  turn.setState("stopping", "stopping…");
  turn.stream.cancel().catch((error) => turn.setState("error", `stop failed: ${error.message}`));
});
$("new-chat").addEventListener("click", () => {
  conversation = crypto.randomUUID();
  history.replaceChildren();
  prompt.focus();
});
document.body.dataset.ready = "1";
