// What every page shares: the token of the tab, API calls, the connection badge,
// and how values are shown. Every text reaches the page through textContent.

const TOKEN_KEY = "switchboard.token";

// The token: from ?token= on first load (kept for the tab, dropped from the address
// bar so it is not bookmarked, shared or left in history), else from the tab.
export function takeToken() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    sessionStorage.setItem(TOKEN_KEY, given);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// el("button", {class: "x", onclick: fn, "aria-label": "..."}, "text", child, ...)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A fresh element id ("col-7"): ids tie labels to their fields, and a page may
// open a dialog more than once.
let uid = 0;
export const nextId = (prefix) => `${prefix}-${++uid}`;

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.body = body;
  }
}

export function apiClient(token) {
  const api = async function api(method, path, body, headers = {}) {
    const init = { method, headers: { Authorization: `Bearer ${token}`, Accept: "application/json", ...headers } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch (error) {
      parsed = null;
    }
    if (!response.ok) throw new ApiError(response.status, parsed);
    return parsed;
  };
  api.token = token;
  return api;
}

// Signs the page in: the token's caller (GET /api/v1/me), or a prompt for a token.
export async function signIn(roles) {
  const token = takeToken();
  if (!token) return showSignIn("This page needs a token.");
  const api = apiClient(token);
  let me;
  try {
    me = await api("GET", "/api/v1/me");
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      forgetToken();
      return showSignIn(`The token was refused: ${error.message}`);
    }
    throw error;
  }
  if (roles && !roles.includes(me.role)) {
    return showSignIn(`This page is for the ${roles.join(" or ")} role; this token is ${me.role}.`);
  }
  document.body.dataset.signedIn = "";
  const who = document.querySelector("[data-who]");
  if (who) who.textContent = `${me.user} · ${me.role} · ${me.tenant}`;
  return { token, api, me };
}

function showSignIn(reason) {
  const main = document.querySelector("main");
  main.replaceChildren();
  const input = el("textarea", { id: "token-input", rows: 4, required: true, "aria-describedby": "sign-in-reason" });
  const form = el(
    "form",
    {
      class: "sign-in card",
      "aria-labelledby": "sign-in-title",
      onsubmit: (event) => {
        event.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        location.reload();
      },
    },
    el("h2", { id: "sign-in-title" }, "Sign in"),
    el("p", { id: "sign-in-reason" }, reason),
    el("p", {}, "Paste a token (`make run` prints links with tokens; `switchboard token --tenant T --role R --user U` makes one)."),
    el("label", { for: "token-input" }, "Token"),
    input,
    el("button", { type: "submit" }, "Sign in"),
  );
  main.append(form);
  input.focus();
  return null;
}

// The connection badge (data-connection: live, reconnecting, offline) and the age
// of the data, updated every second.
export function showConnection(live) {
  const badge = document.querySelector("[data-connection]");
  const age = document.querySelector("[data-age]");
  live.onState((state) => {
    badge.dataset.connection = state;
    badge.textContent = { live: "Live", reconnecting: "Reconnecting…", offline: "Offline, retrying" }[state];
  });
  setInterval(() => {
    if (!age || live.lastFrameAt === null) return;
    // Live: the pings prove the data current. Otherwise: since the last frame.
    const seconds = live.state === "live" ? 0 : Math.round((Date.now() - live.lastFrameAt) / 1000);
    age.dataset.age = String(seconds);
    age.textContent = seconds < 2 ? "data current" : `data ${duration(seconds)} old`;
  }, 1000);
  live.on("token_expired", () => {
    forgetToken();
    badge.textContent = "Token expired: reload to sign in";
  });
}

// --- how values show ---------------------------------------------------------------

const WORDS = { whatsapp: "WhatsApp", sms: "SMS", csat: "CSAT" };

export function humanize(value) {
  if (value === null || value === undefined || value === "") return "";
  if (WORDS[value]) return WORDS[value];
  const text = String(value).replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "";
  const s = Math.max(0, Math.round(Number(seconds)));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

// An RFC 3339 instant as a date and time in the tenant's zone (not the browser's).
export function zoned(instant, timeZone, withDate = true) {
  if (!instant) return "";
  const options = { timeZone, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  if (withDate) Object.assign(options, { year: "numeric", month: "2-digit", day: "2-digit" });
  return new Intl.DateTimeFormat("sv-SE", options).format(new Date(instant));
}

const ENUM_COLUMNS = new Set(["direction", "state", "channel", "status", "hangup_source"]);

// A cell's text for a view column (the server's /api/v1/view-schema names them).
export function cellText(column, value) {
  if (value === null || value === undefined) return "";
  if (ENUM_COLUMNS.has(column)) return humanize(value);
  if (column === "channels") return value.map(humanize).join(", ");
  if (column === "wait_s" || column === "handle_s") return duration(value);
  if (column === "has_recording") return value ? "Yes" : "";
  if (column === "created_at") return value.replace("T", " ").replace(/\.\d+Z$/, " UTC");
  return String(value);
}

// Random, and made with getRandomValues: randomUUID needs https or localhost.
export function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// An <audio> that streams a recording. An <audio src> cannot send the bearer token, so
// its src is a link minted for this recording alone (a token in the query, valid a few
// minutes): the browser then asks for bytes with Range as it plays and seeks, and
// preload="metadata" fetches only the start until play. A request made after the link
// expired (a seek minutes later) fails: the player mints a fresh link and goes on from
// where it was. Once per loaded link, so a recording that cannot play stops there and
// `onFailure` says why.
export async function recordingPlayer(api, conversationId, recording, onFailure = () => {}) {
  const linkPath = `/api/v1/conversations/${encodeURIComponent(conversationId)}/recordings/${encodeURIComponent(recording.id)}/link`;
  const link = await api("POST", linkPath);
  const audio = el("audio", { controls: true, preload: "metadata", src: link.url, "aria-label": `Recording of ${conversationId}`, dataset: { recording: recording.id } });
  let renewable = false; // true once the current link has loaded
  let wantsPlay = false;
  audio.addEventListener("loadedmetadata", () => { renewable = true; });
  audio.addEventListener("play", () => { wantsPlay = true; });
  audio.addEventListener("pause", () => { if (!audio.error) wantsPlay = false; });
  audio.addEventListener("error", async () => {
    const reason = audio.error ? audio.error.message || `media error ${audio.error.code}` : "unknown";
    if (!renewable) return onFailure(new Error(`the recording cannot load (${reason})`));
    renewable = false;
    const position = audio.currentTime;
    const resume = wantsPlay;
    try {
      const fresh = await api("POST", linkPath);
      audio.addEventListener("loadedmetadata", () => {
        audio.currentTime = position;
        if (resume) audio.play().catch(onFailure);
      }, { once: true });
      audio.src = fresh.url;
    } catch (error) {
      onFailure(error);
    }
  });
  return audio;
}

