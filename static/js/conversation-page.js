// /conversations/{id}: everything about one conversation, reloaded whenever its row
// changes (a one-row subscription tells when).

import { cellText, duration, el, humanize, idempotencyKey, recordingPlayer, showConnection, signIn, zoned } from "./common.js";
import { Live } from "./live.js";

const FACTS = [
  "status", "state", "channel", "channels", "direction", "team", "agent_name", "created_date",
  "created_time", "wait_s", "handle_s", "hangup_source", "contacto_number", "ticket_id", "csat",
];

async function main() {
  const session = await signIn(["supervisor", "admin", "agent"]);
  if (!session) return;
  const { token, api, me } = session;
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const live = new Live(token);
  showConnection(live);
  const root = document.getElementById("main");
  const schema = me.role === "agent" ? null : await api("GET", "/api/v1/view-schema").catch(() => null);
  const labels = Object.fromEntries((schema ? schema.columns : []).map((c) => [c.name, c.label]));
  const notice = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const players = new Map(); // recording id -> <audio>, kept across reloads

  async function load() {
    let detail;
    try {
      detail = await api("GET", `/api/v1/conversations/${encodeURIComponent(id)}`);
    } catch (error) {
      root.replaceChildren(el("p", { class: "error", role: "alert" }, `Conversation ${id}: ${error.message}`));
      return;
    }
    render(detail);
  }

  function render({ conversation: c, customer, transcript, tickets, recordings, timeline }) {
    document.title = `${customer.name || c.contact} · ${c.id} · Switchboard`;
    const tz = me.timezone;
    const section = (title, ...body) => {
      const headingId = `h-${title.toLowerCase().replace(/\W+/g, "-")}`;
      return el("section", { class: "card", "aria-labelledby": headingId }, el("h2", { id: headingId }, title), ...body);
    };
    const facts = (pairs) => el("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v || "—")]));

    const recordingItems = recordings.map((r) => {
      const holder = el("span", { dataset: { playerFor: r.id } });
      if (players.has(r.id)) holder.append(players.get(r.id));
      const play = el("button", {
        type: "button", class: "play", "aria-label": `Play recording ${r.id}`,
        onclick: async () => {
          if (players.has(r.id)) return players.get(r.id).play();
          try {
            const audio = await recordingPlayer(api, c.id, r, (error) => {
              notice.textContent = `The recording cannot play: ${error.message}`;
            });
            players.set(r.id, audio);
            // The page may have been drawn again while the link was minted: the player
            // goes where this recording's holder is now.
            const current = [...root.querySelectorAll("[data-player-for]")].find((node) => node.dataset.playerFor === r.id);
            (current || holder).append(audio);
            await audio.play();
          } catch (error) {
            notice.textContent = `The recording cannot play: ${error.message}`;
          }
        },
      }, "▶");
      return el("li", {}, play, ` ${duration(r.duration_s)} · ${zoned(r.created_at, tz)} `, holder);
    });

    root.replaceChildren(
      el("div", { class: "row" },
        el("h2", { id: "conversation-title" }, `${customer.name || c.contact} · ${humanize(c.channel)} · ${c.id}`),
        el("span", { class: "spacer" }),
        initiateButtons(c.contact, c.channel)),
      notice,
      el("div", { class: "detail-grid" },
        section("Conversation", facts(FACTS.map((f) => [labels[f] || humanize(f), cellText(f, c[f])]))),
        section("Customer", facts([["Name", customer.name], ["Contact", customer.contact], ["Email", customer.email], ["Phone", customer.phone], ["Customer ID", customer.id]])),
        section("After-conversation work", facts([["Disposition", c.disposition], ["Wrap-up note", c.wrap_up_note], ["CSAT", cellText("csat", c.csat)]])),
        section("Transcript", transcript.length
          ? el("ol", { class: "transcript", "aria-label": "Messages" }, transcript.map((m) => el("li", { class: m.sender },
            m.text, el("span", { class: "meta" }, `${humanize(m.sender)} · ${zoned(m.at, tz)}${m.status ? ` · ${m.status}` : ""}`))))
          : el("p", { class: "muted" }, c.channel === "call" ? "A call has no transcript." : "No messages yet.")),
        section("Tickets", tickets.length
          ? el("ul", {}, tickets.map((t) => el("li", {}, t.url && /^https?:\/\//.test(t.url) ? el("a", { href: t.url, rel: "noopener noreferrer", target: "_blank" }, t.ticket_id) : t.ticket_id, t.system ? ` (${t.system})` : "", ` · ${zoned(t.linked_at, tz)}`)))
          : el("p", { class: "muted" }, "No tickets.")),
        section("Recordings", recordings.length ? el("ul", {}, recordingItems) : el("p", { class: "muted" }, "No recordings.")),
      ),
      section("Event timeline",
        el("table", { class: "plain" },
          el("caption", { class: "sr-only" }, "Events applied to this conversation, oldest first"),
          el("thead", {}, el("tr", {}, ["Occurred", "Event", "Outcome", "Version", "Detail"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", {}, timeline.map((e) => el("tr", {},
            el("td", {}, zoned(e.occurred_at, tz)), el("td", {}, e.type), el("td", {}, e.outcome),
            el("td", {}, e.version ?? ""), el("td", {}, e.message || summary(e.data))))))),
    );
  }

  function summary(data) {
    if (!data || typeof data !== "object") return "";
    return Object.entries(data).filter(([, v]) => typeof v !== "object").map(([k, v]) => `${k}: ${v}`).join(", ");
  }

  function initiateButtons(contact, channel) {
    const textChannel = channel === "whatsapp" ? "whatsapp" : "sms";
    if (!/^\+\d{6,15}$/.test(contact || "")) return el("span");
    const start = async (button, body) => {
      button.disabled = true;
      try {
        const answer = await api("POST", "/api/v1/conversations/initiate", body, { "Idempotency-Key": button.dataset.key });
        notice.replaceChildren("Started: ", el("a", { href: `/conversations/${encodeURIComponent(answer.conversation_id)}` }, answer.conversation_id));
      } catch (error) {
        notice.textContent = `Could not start it: ${error.message}`;
      } finally {
        button.disabled = false;
        button.dataset.key = idempotencyKey();
      }
    };
    const text = el("input", { type: "text", "aria-label": "First message", placeholder: "Message text" });
    const call = el("button", { type: "button", dataset: { key: idempotencyKey() }, onclick: (e) => start(e.currentTarget, { channel: "call", contact }) }, `Call ${contact}`);
    const sms = el("button", {
      type: "button", dataset: { key: idempotencyKey() },
      onclick: (e) => (text.value.trim() ? start(e.currentTarget, { channel: textChannel, contact, text: text.value }) : text.focus()),
    }, `Send ${humanize(textChannel)}`);
    return el("div", { class: "row", role: "group", "aria-label": "Contact the customer" }, call, text, sms);
  }

  let timer = null;
  live.subscribe({ filters: [{ field: "id", op: "eq", value: id }], columns: ["id", "status"] }, 1, {
    onChange: (sub, change) => {
      if (change.snapshot && timer === null && root.querySelector("#conversation-title")) return;
      clearTimeout(timer);
      timer = setTimeout(() => { timer = null; load(); }, 150);
    },
  });
  await load();
}

main();
