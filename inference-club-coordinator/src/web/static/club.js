// Inference Club: the small scripts of the pages. Pages work without them; they add copy
// buttons and the playground's streaming chat.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function setupCopyButtons() {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const target = document.getElementById(button.dataset.copy);
    if (!target || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(target.textContent.trim());
        button.textContent = "Copied";
      } catch (_) {
        button.textContent = "Select and copy";
      }
    });
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Reads server-sent events from a fetch response, calling onData with each `data:` payload.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data && onData(data) === false) return;
    }
  }
}

function setupPlayground() {
  const form = document.querySelector("form[data-chat]");
  if (!form) return;
  const conversation = document.getElementById("conversation");
  const prompt = document.getElementById("prompt");
  const send = document.getElementById("send");
  const status = document.getElementById("chat-status");
  const messages = [];

  document.getElementById("reset").addEventListener("click", () => {
    messages.length = 0;
    conversation.replaceChildren();
    status.textContent = "";
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) return;
    const model = form.elements.model.value;
    const visibility = form.elements.visibility.value;
    messages.push({ role: "user", content: text });
    const mine = element("li", "message role-user");
    mine.append(element("span", "role", "you"), element("div", "text", text));
    const theirs = element("li", "message role-assistant");
    const reasoning = element("details", "reasoning");
    const reasoningText = element("div", "text");
    reasoning.append(element("summary", "", "Reasoning"), reasoningText);
    reasoning.hidden = true;
    const answer = element("div", "text answer");
    theirs.append(element("span", "role", model), reasoning, answer);
    conversation.append(mine, theirs);
    prompt.value = "";
    send.disabled = true;
    status.textContent = "Waiting for a node…";
    let content = "";
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", "x-csrf-token": csrfToken() },
        body: JSON.stringify({ model, messages, stream: true, visibility }),
      });
      const id = response.headers.get("x-club-request-id");
      if (!response.ok) {
        let message = "the club answered " + response.status;
        try {
          message = (await response.json()).error.message;
        } catch (_) {}
        throw new Error(message);
      }
      status.textContent = "Streaming…";
      let failure = null;
      await readEvents(response, (data) => {
        if (data === "[DONE]") return false;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch (_) {
          return true;
        }
        if (chunk.error) {
          failure = chunk.error.message || "the node failed";
          return false;
        }
        for (const choice of chunk.choices || []) {
          const delta = choice.delta || {};
          const thought = delta.reasoning_content || delta.reasoning;
          if (thought) {
            reasoning.hidden = false;
            reasoningText.textContent += thought;
          }
          if (delta.content) {
            content += delta.content;
            answer.textContent = content;
          }
        }
        return true;
      });
      messages.push({ role: "assistant", content });
      if (failure) throw new Error(failure);
      status.textContent = "Done.";
      if (id) {
        const link = element("a", "record-link", "See the record of this request");
        link.href = "/r/" + id;
        const note = element("p", "record");
        note.append(link);
        theirs.append(note);
      }
    } catch (error) {
      theirs.append(element("p", "error", "Error: " + error.message));
      status.textContent = "The request failed.";
    } finally {
      send.disabled = false;
      prompt.focus();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupCopyButtons();
  setupPlayground();
});
