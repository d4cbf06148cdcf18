// The chat page: talks to /v1/chat/completions with stream=true, keeps the conversation in memory.
// Model text is only ever set with textContent / text nodes, never parsed as HTML.
"use strict";

const STRINGS = {
  en: {
    model: "Model", newChat: "New chat", settings: "Settings", system: "System prompt",
    systemHint: "Optional: how the assistant should behave", temperature: "Temperature", topP: "Top-p",
    maxTokens: "Max tokens", apiKey: "API key", apiKeyHint: "Only if the server asks for one",
    inputHint: "Type a message. Enter sends, Shift+Enter is a new line.", send: "Send", stop: "Stop",
    you: "You", assistant: "Assistant", stopped: "stopped", error: "Error", noModels: "No models",
    thinking: "…", usage: (n, s) => `${n} tokens in ${s} s`, finish: { length: "cut at the token limit", abort: "ended by the server" },
    lang: "中文", network: "cannot reach the server", sources: "Sources",
  },
  zh: {
    model: "模型", newChat: "新对话", settings: "设置", system: "系统提示词",
    systemHint: "可选：助手应当如何表现", temperature: "温度", topP: "Top-p",
    maxTokens: "最大生成长度", apiKey: "API 密钥", apiKeyHint: "仅当服务器需要时填写",
    inputHint: "输入消息。回车发送，Shift+回车换行。", send: "发送", stop: "停止",
    you: "你", assistant: "助手", stopped: "已停止", error: "错误", noModels: "没有模型",
    thinking: "…", usage: (n, s) => `${n} 个词元，用时 ${s} 秒`, finish: { length: "已达到长度上限", abort: "服务器结束了回答" },
    lang: "English", network: "无法连接服务器", sources: "资料来源",
  },
};

const $ = (id) => document.getElementById(id);
const state = { history: [], controller: null, composing: false, conversation: 0 };
let lang = localStorage.getItem("llmkit.lang") || ((navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en");

function t(key) {
  return STRINGS[lang][key];
}

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  $("lang").textContent = t("lang");
  for (const el of document.querySelectorAll(".msg .who")) el.textContent = t(el.dataset.role === "user" ? "you" : "assistant");
  for (const el of document.querySelectorAll(".sources .label")) el.textContent = t("sources");
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function loadModels() {
  const select = $("model");
  try {
    const r = await fetch("v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    select.replaceChildren();
    for (const m of body.data) {
      const opt = document.createElement("option");
      opt.value = m.id;
      opt.textContent = m.id;
      select.append(opt);
    }
    const saved = localStorage.getItem("llmkit.model");
    if (saved && body.data.some((m) => m.id === saved)) select.value = saved;
    setStatus("");
  } catch (e) {
    setStatus(t("error") + ": " + e.message, true);
  }
}

function setStatus(text, isError = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function addMessage(role, text) {
  const box = document.createElement("div");
  box.className = "msg " + role;
  const who = document.createElement("div");
  who.className = "who";
  who.dataset.role = role;
  who.textContent = t(role === "user" ? "you" : "assistant");
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  box.append(who, body);
  $("messages").append(box);
  box.scrollIntoView({ block: "end" });
  return body;
}

// The passages a server with --rag put into the prompt, under the answer: "[n] file (position)",
// the passage itself as the tooltip. Text nodes only, like the reply.
function showSources(box, sources) {
  const list = document.createElement("div");
  list.className = "sources";
  const label = document.createElement("div");
  label.className = "label";
  label.textContent = t("sources");
  const items = document.createElement("ol");
  for (const s of sources) {
    const item = document.createElement("li");
    item.textContent = `[${s.n}] ${s.source} (${s.where})`;
    item.title = s.text;
    items.append(item);
  }
  list.append(label, items);
  box.append(list);
}

function busy(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("input").disabled = false;
}

function messagesForRequest() {
  const system = $("system").value.trim();
  return (system ? [{ role: "system", content: system }] : []).concat(state.history);
}

// Server-sent events arrive in arbitrary pieces: split on blank lines, keep the unfinished rest.
function* events(buffer) {
  let at;
  while ((at = buffer.text.indexOf("\n\n")) >= 0) {
    const block = buffer.text.slice(0, at);
    buffer.text = buffer.text.slice(at + 2);
    for (const line of block.split("\n")) if (line.startsWith("data: ")) yield line.slice(6);
  }
}

async function send(text) {
  const conversation = state.conversation;
  state.history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  out.classList.add("pending");
  const reply = document.createTextNode("");
  out.append(reply);
  const controller = new AbortController();
  state.controller = controller;
  busy(true);
  setStatus("");
  const started = performance.now();
  let usage = null, finish = null, failed = null;
  try {
    const r = await fetch("v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: $("model").value || undefined,
        messages: messagesForRequest(),
        stream: true,
        stream_options: { include_usage: true },
        temperature: Number($("temperature").value),
        top_p: Number($("top-p").value),
        max_tokens: Math.max(1, parseInt($("max-tokens").value, 10) || 256),
      }),
    });
    if (!r.ok) {
      let message = r.statusText;
      try { message = (await r.json()).error.message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    const buffer = { text: "" };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer.text += decoder.decode(value, { stream: true });
      for (const data of events(buffer)) {
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        if (chunk.sources && chunk.sources.length) showSources(out.parentElement, chunk.sources);
        for (const c of chunk.choices || []) {
          if (c.delta && c.delta.content) {
            out.classList.remove("pending");
            reply.appendData(c.delta.content); // text, never HTML
            out.scrollIntoView({ block: "end" });
          }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
  } catch (e) {
    failed = e;
  }
  out.classList.remove("pending");
  state.controller = null;
  busy(false);
  if (conversation !== state.conversation) return; // "New chat" was pressed meanwhile
  state.history.push({ role: "assistant", content: reply.data });
  if (failed && failed.name === "AbortError") {
    out.parentElement.classList.add("stopped");
    setStatus(t("stopped"));
  } else if (failed) {
    const msg = failed instanceof TypeError ? t("network") : failed.message;
    out.parentElement.classList.add("failed");
    setStatus(t("error") + ": " + msg, true);
  } else {
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    const note = STRINGS[lang].finish[finish] ? " · " + STRINGS[lang].finish[finish] : "";
    setStatus((usage ? t("usage")(usage.completion_tokens, secs) : "") + note);
  }
  $("input").focus();
}

function submit() {
  const input = $("input");
  const text = input.value;
  if (!text.trim() || state.controller) return;
  input.value = "";
  send(text);
}

function setup() {
  $("settings").addEventListener("submit", (e) => e.preventDefault());
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    submit();
  });
  const input = $("input");
  // An Enter that confirms an IME candidate (Chinese, Japanese...) must not send the message.
  input.addEventListener("compositionstart", () => { state.composing = true; });
  input.addEventListener("compositionend", () => { setTimeout(() => { state.composing = false; }, 0); });
  input.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.shiftKey) return;
    if (e.isComposing || state.composing || e.keyCode === 229) return;
    e.preventDefault();
    submit();
  });
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("new-chat").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.conversation += 1;
    state.history = [];
    $("messages").replaceChildren();
    setStatus("");
  });
  $("settings-toggle").addEventListener("click", () => {
    const panel = $("settings");
    panel.hidden = !panel.hidden;
    $("settings-toggle").setAttribute("aria-expanded", String(!panel.hidden));
  });
  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem("llmkit.lang", lang);
    applyLanguage();
  });
  for (const [id, out] of [["temperature", "temperature-value"], ["top-p", "top-p-value"]]) {
    const show = () => { $(out).textContent = Number($(id).value).toFixed(2); };
    $(id).addEventListener("input", show);
    show();
  }
  $("model").addEventListener("change", () => localStorage.setItem("llmkit.model", $("model").value));
  const key = $("api-key");
  key.value = localStorage.getItem("llmkit.apiKey") || "";
  key.addEventListener("change", () => {
    localStorage.setItem("llmkit.apiKey", key.value.trim());
    loadModels();
  });
  applyLanguage();
  loadModels();
  input.focus();
}

setup();
