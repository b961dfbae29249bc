/*
 * Switchboard chat widget. A website embeds it with
 *
 *   <script src="https://cc.example.com/widget.js" data-tenant="acme"
 *           data-team="support" data-title="Chat with us" async></script>
 *
 * and the site's origin must be in the tenant's `widget_origins`. It opens
 * WS /webchat/{tenant} on the server the script came from (docs/api.md): `hello`, then
 * `message` frames; it shows the server's `message` and `status` frames. Plain
 * script, no build, no dependencies; everything lives in a shadow root so the
 * host page's styles do not leak in. Text is always shown as text, never markup.
 *
 * Hooks for tests: [data-webchat="launcher"], [data-webchat="panel"],
 * [data-webchat="status"], [data-webchat="log"] holding [data-message-id] items
 * with data-sender, [data-webchat="input"], [data-webchat="send"],
 * [data-webchat="end"]; the host element carries data-connection
 * (connecting | live | reconnecting | offline).
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.dataset.tenant) {
    console.error("switchboard widget: the script tag needs data-tenant");
    return;
  }
  var tenant = script.dataset.tenant;
  var team = script.dataset.team || null;
  var title = script.dataset.title || "Chat with us";
  var server = new URL(script.src, document.baseURI);
  var socketUrl =
    (server.protocol === "https:" ? "wss://" : "ws://") +
    server.host +
    "/webchat/" +
    encodeURIComponent(tenant);

  var STATUS_TEXT = {
    ready: "Write to us: an agent will answer here.",
    new: "Looking for an agent…",
    queued: "Waiting for an agent…",
    offered: "An agent is about to join…",
    wrap_up: "The chat has ended.",
    closed: "The chat has ended.",
  };
  var ENDED_TEXT = {
    out_of_business_hours: "We are closed now. Leave a message and we will get back to you.",
    enqueue_failed: "All our agents are busy. Please try again in a few minutes.",
    agent_assignment_failed: "No agent is available right now.",
    queue_timeout: "No agent could take the chat in time. Sorry!",
    dropped: "You ended the chat.",
  };
  var MAX_PENDING = 50;

  function randomId(bytes) {
    var data = new Uint8Array(bytes);
    crypto.getRandomValues(data);
    return Array.prototype.map
      .call(data, function (b) {
        return ("0" + b.toString(16)).slice(-2);
      })
      .join("");
  }

  // The visitor's id is a secret that names its chat: kept per tenant in this browser.
  var storageKey = "switchboard-webchat:" + tenant;
  var visitor = null;
  try {
    visitor = localStorage.getItem(storageKey);
  } catch (e) {
    visitor = null;
  }
  if (!visitor || !/^[A-Za-z0-9_-]{16,128}$/.test(visitor)) {
    visitor = randomId(16);
    try {
      localStorage.setItem(storageKey, visitor);
    } catch (e) {
      /* private mode: a new visitor per page load */
    }
  }

  // --- the elements --------------------------------------------------------------
  var host = document.createElement("div");
  host.setAttribute("data-switchboard-widget", tenant);
  host.setAttribute("data-connection", "connecting");
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" +
    ":host{all:initial;position:fixed;right:20px;bottom:20px;z-index:2147483000;" +
    "font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d2330}" +
    "button{font:inherit;cursor:pointer}" +
    ".launcher{border:0;border-radius:28px;padding:14px 22px;background:#2f5bea;color:#fff;" +
    "box-shadow:0 6px 20px rgba(20,40,120,.3);font-weight:600}" +
    ".launcher:focus-visible,.send:focus-visible,.end:focus-visible,.close:focus-visible" +
    "{outline:3px solid #ffbf47;outline-offset:2px}" +
    ".panel{width:340px;max-width:calc(100vw - 40px);height:460px;max-height:calc(100vh - 40px);" +
    "display:flex;flex-direction:column;background:#fff;border-radius:14px;overflow:hidden;" +
    "box-shadow:0 12px 40px rgba(20,30,60,.3)}" +
    ".panel[hidden]{display:none}" +
    "header{background:#2f5bea;color:#fff;padding:12px 14px;display:flex;align-items:center;gap:8px}" +
    "header h2{font-size:16px;margin:0;flex:1}" +
    ".close{background:transparent;border:0;color:#fff;font-size:20px;line-height:1}" +
    ".status{padding:8px 14px;background:#eef2ff;font-size:13px;color:#34406b}" +
    ".conn{font-size:12px;color:#8a93b0}" +
    ".log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;" +
    "margin:0;list-style:none}" +
    ".msg{max-width:80%;padding:8px 12px;border-radius:12px;white-space:pre-wrap;" +
    "overflow-wrap:anywhere}" +
    ".msg[data-sender=customer]{align-self:flex-end;background:#2f5bea;color:#fff;" +
    "border-bottom-right-radius:4px}" +
    ".msg[data-sender=agent]{align-self:flex-start;background:#f0f1f5;border-bottom-left-radius:4px}" +
    ".msg[data-sender=system]{align-self:center;background:transparent;color:#667;font-size:13px}" +
    ".msg[data-pending]{opacity:.6}" +
    ".msg time{display:block;font-size:11px;opacity:.7;margin-top:2px}" +
    "form{display:flex;gap:6px;padding:10px;border-top:1px solid #e4e6ee}" +
    "textarea{flex:1;resize:none;font:inherit;border:1px solid #c9cfe0;border-radius:8px;" +
    "padding:8px;height:40px}" +
    ".send{border:0;background:#2f5bea;color:#fff;border-radius:8px;padding:0 14px}" +
    ".end{border:0;background:transparent;color:#fff;text-decoration:underline;font-size:13px}" +
    ".error{color:#b3261e;font-size:13px;padding:0 14px 6px}" +
    "</style>" +
    '<button class="launcher" type="button" data-webchat="launcher" aria-expanded="false"></button>' +
    '<section class="panel" data-webchat="panel" role="dialog" aria-modal="false" hidden>' +
    '<header><h2 data-webchat="title"></h2>' +
    '<button class="end" type="button" data-webchat="end" hidden>End chat</button>' +
    '<button class="close" type="button" data-webchat="close" aria-label="Close the chat">×</button>' +
    "</header>" +
    '<div class="status" data-webchat="status" role="status"></div>' +
    '<ol class="log" data-webchat="log" role="log" aria-live="polite" aria-label="Messages"></ol>' +
    '<div class="error" data-webchat="error" role="alert"></div>' +
    '<form data-webchat="form">' +
    '<textarea data-webchat="input" aria-label="Your message" placeholder="Type a message…" maxlength="4096"></textarea>' +
    '<button class="send" type="submit" data-webchat="send">Send</button>' +
    "</form>" +
    '<div class="conn" data-webchat="connection" style="padding:0 14px 6px"></div>' +
    "</section>";

  function part(name) {
    return root.querySelector('[data-webchat="' + name + '"]');
  }
  var launcher = part("launcher");
  var panel = part("panel");
  var statusLine = part("status");
  var log = part("log");
  var errorLine = part("error");
  var form = part("form");
  var input = part("input");
  var connLine = part("connection");
  launcher.textContent = title;
  part("title").textContent = title;
  panel.setAttribute("aria-label", title);

  function open() {
    panel.hidden = false;
    launcher.hidden = true;
    launcher.setAttribute("aria-expanded", "true");
    input.focus();
    connect();
  }
  function close() {
    panel.hidden = true;
    launcher.hidden = false;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }
  launcher.addEventListener("click", open);
  part("close").addEventListener("click", close);
  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") close();
  });

  // --- messages ------------------------------------------------------------------
  function timeText(at) {
    var when = at ? new Date(at) : new Date();
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function show(id, sender, text, at, pending) {
    var item = log.querySelector('[data-message-id="' + CSS.escape(id) + '"]');
    if (!item) {
      item = document.createElement("li");
      item.className = "msg";
      item.setAttribute("data-message-id", id);
      log.appendChild(item);
    }
    item.setAttribute("data-sender", sender);
    if (pending) item.setAttribute("data-pending", "");
    else item.removeAttribute("data-pending");
    item.textContent = text; // text, never markup
    var stamp = document.createElement("time");
    if (at) stamp.dateTime = at;
    stamp.textContent = timeText(at);
    item.appendChild(stamp);
    log.scrollTop = log.scrollHeight;
  }

  var status = null;
  function showStatus(frame) {
    status = frame.status;
    var text = STATUS_TEXT[frame.status] || frame.status;
    if (frame.status === "active") {
      text = frame.agent ? frame.agent + " is chatting with you." : "An agent is chatting with you.";
    } else if ((frame.status === "closed" || frame.status === "wrap_up") && ENDED_TEXT[frame.state]) {
      text = ENDED_TEXT[frame.state];
    }
    if (frame.status === "closed" || frame.status === "wrap_up") {
      text += " Write again to start a new chat.";
    }
    statusLine.textContent = text;
    statusLine.setAttribute("data-status", frame.status);
    part("end").hidden = !(frame.status in { new: 1, queued: 1, offered: 1, active: 1 });
  }

  // --- the socket ----------------------------------------------------------------
  var socket = null;
  var live = false;
  var attempt = 0;
  var retryTimer = null;
  var pending = []; // messages not yet echoed by the server: resent after a reconnect

  function setConnection(state, text) {
    host.setAttribute("data-connection", state);
    connLine.textContent = text || "";
  }

  function connect() {
    if (socket || retryTimer) return;
    setConnection(attempt ? "reconnecting" : "connecting", attempt ? "Reconnecting…" : "");
    var ws;
    try {
      ws = new WebSocket(socketUrl);
    } catch (e) {
      scheduleRetry();
      return;
    }
    socket = ws;
    ws.onopen = function () {
      attempt = 0;
      live = true;
      setConnection("live", "");
      var hello = { type: "hello", visitor: visitor };
      if (team) hello.team = team;
      if (script.dataset.name) hello.name = script.dataset.name;
      ws.send(JSON.stringify(hello));
      pending.forEach(function (message) {
        ws.send(JSON.stringify(message));
      });
    };
    ws.onmessage = function (event) {
      var frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      if (frame.type === "message") {
        pending = pending.filter(function (m) {
          return "w-" + m.id !== frame.id;
        });
        show(frame.id, frame.sender, frame.text, frame.at, false);
        if (frame.sender === "agent" && panel.hidden) launcher.textContent = title + " •";
      } else if (frame.type === "status") {
        showStatus(frame);
      } else if (frame.type === "error") {
        errorLine.textContent = frame.message;
        if (frame.code === "rate_limited" || frame.code === "unavailable") {
          resendLater((frame.retry_after || 2) * 1000);
        } else {
          pending = [];
          log.querySelectorAll("[data-pending]").forEach(function (item) {
            item.remove();
          });
        }
      }
    };
    ws.onclose = function (event) {
      socket = null;
      live = false;
      if (event.code === 1008 || event.code === 4403) {
        setConnection("offline", "The chat is not available on this site.");
        return;
      }
      scheduleRetry();
    };
  }

  // Messages refused for now (rate limit, a database hiccup) go again later, with their
  // ids: one the server did take meanwhile is a duplicate there.
  var resendTimer = null;
  function resendLater(ms) {
    if (resendTimer) return;
    resendTimer = setTimeout(function () {
      resendTimer = null;
      if (!live) return; // a reconnect sends them anyway
      errorLine.textContent = "";
      pending.forEach(function (message) {
        socket.send(JSON.stringify(message));
      });
    }, ms + 100);
  }

  // Reconnect with exponential backoff and jitter, forever (a visitor may wait long).
  function scheduleRetry() {
    attempt += 1;
    var delay = Math.min(30000, 500 * Math.pow(2, attempt - 1));
    delay = delay / 2 + Math.random() * (delay / 2);
    setConnection("reconnecting", "Connection lost. Reconnecting…");
    retryTimer = setTimeout(function () {
      retryTimer = null;
      connect();
    }, delay);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    if (pending.length >= MAX_PENDING) {
      errorLine.textContent = "Too many messages are waiting to be sent.";
      return;
    }
    errorLine.textContent = "";
    var message = { type: "message", id: randomId(8), text: text };
    try {
      localStorage.setItem(storageKey + ":chatted", "1");
    } catch (e) {
      /* then the widget connects when opened, as at first */
    }
    pending.push(message);
    show("w-" + message.id, "customer", text, null, true);
    input.value = "";
    if (live) socket.send(JSON.stringify(message));
    else connect();
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  part("end").addEventListener("click", function () {
    if (live) socket.send(JSON.stringify({ type: "end" }));
  });

  function mount() {
    document.body.appendChild(host);
    var chatted = null;
    try {
      chatted = localStorage.getItem(storageKey + ":chatted");
    } catch (e) {
      chatted = null;
    }
    if (script.dataset.open === "true") open();
    else if (chatted) connect(); // a visitor who chatted before hears the agent's replies
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
