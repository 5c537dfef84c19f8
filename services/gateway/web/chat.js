// chat.js: the gateway's chat page. Everything it does goes through the SDK.
import { Sluice } from "/sdk/sluice.js";
import { render } from "/ui/markdown.js";

const $ = (id) => document.getElementById(id);
const form = $("composer"), prompt = $("prompt"), send = $("send"), stop = $("stop");
const history = $("history"), apiKey = $("api-key"), options = $("options");
let conversation = crypto.randomUUID();
let current = null;   // the turn whose answer is streaming
let editing = null;   // the turn being edited, superseded on send

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
    this.text = "";
    this.tokens = 0;
    this.sentAt = performance.now();
    this.firstAt = null;
    this.lastAt = null;
    this.stream = null;
    this.setState("sending", "sending…");
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

  tokens_(batch) {
    for (const token of batch) {
      if (token.channel !== "text") continue;
      this.text += token.text;
      this.tokens += token.n;
    }
    const now = performance.now();
    if (this.firstAt === null) this.firstAt = now;
    this.lastAt = now;
    this.body.replaceChildren(...render(this.text));
    if (this.answer.dataset.state !== "streaming") this.setState("streaming", "");
    this.node.scrollIntoView({ block: "end" });
  }

  done(done) {
    this.answer.dataset.finishReason = done.finish_reason;
    this.answer.dataset.tokens = done.tokens;
    if (done.ttft_ms != null) this.answer.dataset.ttftMs = done.ttft_ms;
    const labels = { stop: "", length: "stopped at max tokens", cancelled: "stopped",
      superseded: "superseded", abandoned: "abandoned" };
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

function request(text, upTo) {
  let extra = {};
  try { extra = options.value.trim() ? JSON.parse(options.value) : {}; } catch { extra = {}; }
  return { model: "sim", ...extra, messages: messages(text, upTo), conversation_id: conversation, supersede: true };
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
    turn.stream = await sluice.stream(request(text, upTo), {
      status: (s) => turn.status(s),
      tokens: (batch) => turn.tokens_(batch),
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
