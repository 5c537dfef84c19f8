// markdown.js: enough Markdown for a chat answer, rendered as DOM nodes (never as HTML).
//
// It renders text that is still arriving: a ``` fence that has not closed yet is
// already a code block, so code looks like code while it streams. Text only ever
// becomes text nodes, so an answer cannot inject markup into the page.

const FENCE = /^(\s*)(```|~~~)\s*([\w+#.-]*)\s*$/;
const INLINE = /(`[^`\n]+`|\*\*[^*\n]+\*\*)/;

/** Append inline text (`code` and **bold**) to `parent`. */
function inline(parent, text) {
  for (const part of text.split(INLINE)) {
    if (!part) continue;
    if (part.startsWith("`") && part.endsWith("`") && part.length > 2) {
      const code = document.createElement("code");
      code.textContent = part.slice(1, -1);
      parent.append(code);
    } else if (part.startsWith("**") && part.endsWith("**") && part.length > 4) {
      const strong = document.createElement("strong");
      strong.textContent = part.slice(2, -2);
      parent.append(strong);
    } else {
      parent.append(part);
    }
  }
}

function paragraph(lines) {
  const heading = /^(#{1,4})\s+(.*)$/.exec(lines[0]);
  if (heading && lines.length === 1) {
    const h = document.createElement(`h${heading[1].length + 2}`);
    inline(h, heading[2]);
    return h;
  }
  if (lines.every((line) => /^\s*([-*]|\d+\.)\s+/.test(line))) {
    const list = document.createElement(/^\s*\d/.test(lines[0]) ? "ol" : "ul");
    for (const line of lines) {
      const item = document.createElement("li");
      inline(item, line.replace(/^\s*([-*]|\d+\.)\s+/, ""));
      list.append(item);
    }
    return list;
  }
  const p = document.createElement("p");
  inline(p, lines.join("\n"));
  return p;
}

function codeBlock(language, lines, open) {
  const pre = document.createElement("pre");
  const code = document.createElement("code");
  if (language) {
    code.dataset.language = language;
    pre.dataset.language = language;
  }
  if (open) pre.classList.add("streaming");
  code.textContent = lines.join("\n");
  pre.append(code);
  return pre;
}

/** The nodes for `text`: paragraphs, headings, lists and fenced code (open or closed). */
export function render(text) {
  const nodes = [];
  let prose = [];
  let fence = null;
  const endProse = () => {
    if (prose.length) nodes.push(paragraph(prose));
    prose = [];
  };
  for (const line of text.split("\n")) {
    const marker = FENCE.exec(line);
    if (fence) {
      if (marker && marker[2] === fence.marker && !marker[3]) {
        nodes.push(codeBlock(fence.language, fence.lines, false));
        fence = null;
      } else {
        fence.lines.push(line);
      }
    } else if (marker) {
      endProse();
      fence = { marker: marker[2], language: marker[3], lines: [] };
    } else if (!line.trim()) {
      endProse();
    } else {
      prose.push(line);
    }
  }
  endProse();
  if (fence) nodes.push(codeBlock(fence.language, fence.lines, true));
  return nodes;
}
