// /agent: the agent console. Presence; popups of offers (customer, history, tickets,
// a countdown to expiry) to accept or reject; the agent's conversations (the server
// scopes every view of an agent to its own); replies, hang-up and the wrap-up form.

import { duration, el, humanize, showConnection, signIn, zoned } from "./common.js";
import { Live } from "./live.js";

const DISPOSITIONS = ["resolved", "sale", "callback", "escalated", "information", "other"];
const TEXT_CHANNELS = new Set(["chat", "sms", "whatsapp", "omnichannel"]);

async function main() {
  const session = await signIn(["agent"]);
  if (!session) return;
  const { token, api, me } = session;
  const live = new Live(token);
  showConnection(live);
  const tz = me.timezone;
  const root = document.getElementById("main");

  // --- presence
  const presence = el("select", { id: "presence" }, ["available", "away", "offline"].map((p) => el("option", { value: p }, humanize(p))));
  presence.value = me.presence;
  const presenceNote = el("span", { class: "muted", role: "status" });
  presence.addEventListener("change", async () => {
    try {
      await live.request({ type: "presence", presence: presence.value });
      presenceNote.textContent = "";
    } catch (error) {
      presenceNote.textContent = `Not changed: ${error.message}`;
    }
  });

  // --- popups
  const popups = el("div", { class: "popups", "aria-live": "assertive", "aria-label": "Offers" });
  const offers = new Map(); // offer id -> {node, timer}

  function closePopup(offerId) {
    const offer = offers.get(offerId);
    if (!offer) return;
    clearInterval(offer.timer);
    offer.node.remove();
    offers.delete(offerId);
  }

  function showPopup(frame) {
    if (offers.has(frame.offer_id)) return; // the same offer again, after a reconnect
    const c = frame.conversation;
    const customer = frame.customer || {};
    const titleId = `offer-${offers.size}-${Date.now()}`;
    const countdown = el("span", { class: "countdown", "aria-label": "Seconds left to answer" });
    const problem = el("p", { class: "error", role: "alert" });
    const answer = async (type, button) => {
      for (const b of node.querySelectorAll("button")) b.disabled = true;
      try {
        const ok = await live.request({ type, offer_id: frame.offer_id });
        closePopup(frame.offer_id);
        if (type === "accept") select(ok.conversation.id);
      } catch (error) {
        problem.textContent = `${humanize(type)} failed: ${error.message}`;
        if (error.code === "taken" || error.code === "expired") setTimeout(() => closePopup(frame.offer_id), 2000);
        else for (const b of node.querySelectorAll("button")) b.disabled = false;
      }
      button.blur();
    };
    const history = frame.history || [];
    const tickets = frame.tickets || [];
    const node = el("section", { class: "popup", dataset: { offer: frame.offer_id }, role: "alertdialog", "aria-labelledby": titleId },
      el("div", { class: "row" },
        el("h3", { id: titleId }, `${humanize(c.channel)} from ${customer.name || c.customer_name || c.contact}`),
        el("span", { class: "spacer" }), countdown),
      el("dl", { class: "facts" },
        el("dt", {}, "Contact"), el("dd", {}, c.contact || "—"),
        el("dt", {}, "Team"), el("dd", {}, c.team || "—"),
        el("dt", {}, "Email"), el("dd", {}, customer.email || "—"),
        el("dt", {}, "Waiting since"), el("dd", {}, zoned(c.queued_at || c.created_at, tz, false))),
      el("h4", {}, `History (${history.length})`),
      history.length
        ? el("ul", {}, history.map((h) => el("li", {}, `${h.created_date || ""} · ${humanize(h.channel)} · ${humanize(h.state || h.status)}${h.disposition ? ` · ${h.disposition}` : ""}`)))
        : el("p", { class: "muted" }, "First contact."),
      el("h4", {}, `Tickets (${tickets.length})`),
      tickets.length ? el("ul", {}, tickets.map((t) => el("li", {}, `${t.ticket_id}${t.system ? ` (${t.system})` : ""}`))) : el("p", { class: "muted" }, "None."),
      problem,
      el("div", { class: "row" },
        el("button", { type: "button", class: "primary", dataset: { answer: "accept" }, onclick: (e) => answer("accept", e.currentTarget) }, "Accept"),
        el("button", { type: "button", class: "danger", dataset: { answer: "reject" }, onclick: (e) => answer("reject", e.currentTarget) }, "Reject")),
    );
    const expires = Date.parse(frame.expires_at);
    const tick = () => {
      const left = Math.max(0, Math.ceil((expires - Date.now()) / 1000));
      countdown.textContent = `${left}s`;
      countdown.classList.toggle("low", left <= 5);
    };
    tick();
    offers.set(frame.offer_id, { node, timer: setInterval(tick, 250) });
    popups.prepend(node);
    node.querySelector("button").focus();
  }

  live.on("popup", showPopup);
  live.on("popup_closed", (frame) => closePopup(frame.offer_id));
  // Offers shown before a reconnect may have ended meanwhile: the server sends a popup
  // again for each one still pending.
  live.onOpen(() => {
    for (const offerId of [...offers.keys()]) closePopup(offerId);
  });

  // --- my conversations
  const mine = el("ul", { class: "mine", "aria-label": "My conversations" });
  const panel = el("section", { class: "card", "aria-label": "Conversation" }, el("p", { class: "muted" }, "Choose a conversation."));
  let selected = null;
  const view = {
    filters: [{ field: "status", op: "in", value: ["offered", "active", "wrap_up", "dialing", "ringing"] }],
    columns: ["id", "customer_name", "channel", "status", "contact", "created_time"],
    sort: [{ field: "created_at", dir: "desc" }],
  };
  live.subscribe(view, 100, {
    onChange: (sub, change) => {
      const rows = sub.sorted(view.sort);
      mine.replaceChildren(...(rows.length ? rows.map((row) => el("li", { dataset: { id: row.id } },
        el("button", { type: "button", "aria-current": String(row.id === selected), onclick: () => select(row.id) },
          el("strong", {}, row.customer_name || row.contact), ` · ${humanize(row.channel)} · `,
          el("span", { class: `status-${row.status}` }, humanize(row.status))))) : [el("li", { class: "muted" }, "Nothing right now.")]));
      if (selected && (change.snapshot || change.upserted.includes(selected) || change.removed.includes(selected))) load(selected);
      // Nothing chosen: open the conversation that needs the agent (active, wrap-up).
      const working = rows.find((row) => row.status === "active" || row.status === "wrap_up");
      if (!selected && working) select(working.id);
    },
  });

  function select(id) {
    selected = id;
    for (const b of mine.querySelectorAll("button")) b.setAttribute("aria-current", String(b.parentNode.dataset.id === id));
    load(id);
  }

  async function load(id) {
    let detail;
    try {
      detail = await api("GET", `/api/v1/conversations/${encodeURIComponent(id)}`);
    } catch (error) {
      panel.replaceChildren(el("p", { class: "error" }, `${id}: ${error.message}`));
      return;
    }
    if (id !== selected) return;
    const keepDraft = panel.querySelector("textarea[name=reply]")?.value || "";
    const keepNote = panel.querySelector("textarea[name=note]")?.value || "";
    renderPanel(detail, keepDraft, keepNote);
  }

  function renderPanel({ conversation: c, customer, transcript }, draft, note) {
    const problem = el("p", { class: "error", role: "alert" });
    const parts = [
      el("div", { class: "row" },
        el("h2", { id: "panel-title" }, `${customer.name || c.contact} · ${humanize(c.channel)}`),
        el("span", { class: `status-${c.status}` }, humanize(c.status)),
        el("span", { class: "spacer" }),
        el("a", { href: `/conversations/${encodeURIComponent(c.id)}` }, "Details")),
      el("p", { class: "muted" }, `${c.contact} · ${c.id}${c.wait_s != null ? ` · waited ${duration(c.wait_s)}` : ""}`),
    ];
    if (TEXT_CHANNELS.has(c.channel)) {
      parts.push(el("ol", { class: "transcript", "aria-label": "Messages" }, transcript.map((m) => el("li", { class: m.sender },
        m.text, el("span", { class: "meta" }, `${humanize(m.sender)} · ${zoned(m.at, tz, false)}`)))));
    }
    if (c.status === "active" && TEXT_CHANNELS.has(c.channel)) {
      const text = el("textarea", { name: "reply", id: "reply", rows: 2, maxlength: 4096, required: true });
      text.value = draft;
      parts.push(el("form", {
        class: "reply",
        onsubmit: async (event) => {
          event.preventDefault();
          if (!text.value.trim()) return;
          const button = event.currentTarget.querySelector("button");
          button.disabled = true;
          try {
            await live.request({ type: "send_message", conversation_id: c.id, text: text.value });
            text.value = "";
            load(c.id);
          } catch (error) {
            problem.textContent = `Not sent: ${error.message}`;
          } finally {
            button.disabled = false;
          }
        },
      }, el("label", { for: "reply" }, "Reply"), text, el("button", { type: "submit", class: "primary" }, "Send")));
    }
    if (c.status === "active") {
      parts.push(el("button", {
        type: "button", class: "danger",
        onclick: async () => {
          try {
            await live.request({ type: "hangup", conversation_id: c.id });
          } catch (error) {
            problem.textContent = `Could not end it: ${error.message}`;
          }
        },
      }, c.channel === "call" ? "Hang up" : "End conversation"));
    }
    if (c.status === "wrap_up") {
      const disposition = el("select", { id: "disposition", name: "disposition", required: true },
        el("option", { value: "" }, "Choose…"), DISPOSITIONS.map((d) => el("option", { value: d }, humanize(d))));
      const noteBox = el("textarea", { id: "note", name: "note", rows: 3, maxlength: 4096 });
      noteBox.value = note;
      parts.push(el("form", {
        class: "wrapup card", "aria-labelledby": "wrapup-title",
        onsubmit: async (event) => {
          event.preventDefault();
          const button = event.currentTarget.querySelector("button");
          button.disabled = true;
          const body = { disposition: disposition.value };
          if (noteBox.value.trim()) body.note = noteBox.value;
          try {
            await api("POST", `/api/v1/conversations/${encodeURIComponent(c.id)}/wrapup`, body);
            panel.replaceChildren(el("p", { class: "muted", role: "status" }, `Wrap-up of ${c.id} saved.`));
            selected = null;
          } catch (error) {
            problem.textContent = `Not saved: ${error.message}`;
            button.disabled = false;
          }
        },
      },
      el("h3", { id: "wrapup-title" }, "Wrap-up"),
      el("label", { for: "disposition" }, "Disposition"), disposition,
      el("label", { for: "note" }, "Note"), noteBox,
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Submit wrap-up"))));
    }
    parts.push(problem);
    panel.replaceChildren(...parts);
  }

  root.replaceChildren(
    el("div", { class: "console" },
      el("div", {},
        el("section", { class: "card", "aria-labelledby": "presence-title" },
          el("h2", { id: "presence-title" }, `${me.name} · presence`),
          el("div", { class: "row" }, el("label", { for: "presence" }, "I am"), presence, presenceNote)),
        el("section", { class: "card", "aria-labelledby": "offers-title" },
          el("h2", { id: "offers-title" }, "Offers"), popups),
        el("section", { class: "card", "aria-labelledby": "mine-title" },
          el("h2", { id: "mine-title" }, "My conversations"), mine)),
      panel),
  );
}

main();
