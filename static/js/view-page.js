// /views/{id}: one live view. The table holds exactly the subscription's window: rows
// appear, change (briefly highlighted) and leave as deltas arrive; scrolling near the
// end fetches more; rows arriving above keep what the reader looks at in place.

import { cellText, el, idempotencyKey, recordingPlayer, showConnection, signIn } from "./common.js";
import { Live } from "./live.js";
import { openEditor } from "./view-editor.js";

const PAGE = 50;
const PHONE = /^\+\d{6,15}$/;

async function main() {
  const session = await signIn(["supervisor", "admin"]);
  if (!session) return;
  const { token, api } = session;
  const viewId = decodeURIComponent(location.pathname.split("/").pop());
  const live = new Live(token);
  showConnection(live);
  const root = document.getElementById("main");
  let schema;
  let view;
  try {
    [schema, view] = await Promise.all([
      api("GET", "/api/v1/view-schema"),
      api("GET", `/api/v1/views/${encodeURIComponent(viewId)}`),
    ]);
  } catch (error) {
    root.replaceChildren(el("p", { class: "error", role: "alert" }, `This view cannot be opened: ${error.message}`));
    throw error;
  }
  const labels = Object.fromEntries(schema.columns.map((c) => [c.name, c.label]));
  labels.has_recording = "Recording";
  const notice = el("p", { class: "muted", role: "status", "aria-live": "polite" });
  const title = el("h2", { id: "view-title" });
  const total = el("span", { dataset: { total: "" } }, "…");
  const editButton = el("button", { type: "button" }, "Edit view");
  const wrap = el("div", { class: "table-wrap", tabindex: "-1" });
  wrap.style.overflowAnchor = "none"; // we anchor ourselves, by row
  root.replaceChildren(
    el("section", { "aria-labelledby": "view-title" },
      el("div", { class: "row" }, title, el("span", { class: "spacer" }), editButton, el("a", { href: "/views" }, "All views")),
      el("p", { class: "total-line" }, total, " conversations in this view"),
      notice,
      wrap),
  );

  let table = null;
  let sub = null;
  // For integrations and tests: the client and the current subscription.
  window.switchboardView = { live, get subscription() { return sub; } };

  function show(definition) {
    view = definition;
    title.textContent = view.name;
    document.title = `${view.name} · Switchboard`;
    if (sub) sub.close();
    const columns = ["id", ...view.columns.filter((c) => c !== "id")];
    table = new LiveTable(view, columns, labels, { api, notice });
    wrap.replaceChildren(table.node);
    // By the saved view's id, so that the table follows when someone changes it. Rows
    // also carry has_recording, for the play icon.
    sub = live.subscribe(view.id, PAGE, {
      columns: ["has_recording"],
      onResync: (s, frame) => {
        if (frame.reason !== "view_changed") return false;
        reread(s);
        return true;
      },
      onEnd: (s, frame) => {
        if (s === sub) ended(frame.reason);
      },
      onChange: (s, change) => {
        table.apply(s, change, wrap);
        total.textContent = String(s.total);
        table.node.setAttribute("aria-rowcount", String(s.total + 1));
        fillUp();
      },
      onError: (error) => {
        notice.textContent = `The view could not be opened: ${error.message}`;
      },
    });
  }

  // The saved view changed under us: its name, columns and order from the server, then
  // a fresh subscription.
  async function reread(s) {
    let fresh;
    try {
      fresh = await api("GET", `/api/v1/views/${encodeURIComponent(viewId)}`);
    } catch (error) {
      if (s !== sub) return;
      if (error.status === 404) ended("forbidden");
      else {
        notice.textContent = `The view changed and could not be read again: ${error.message}`;
        s.start();
      }
      return;
    }
    if (s !== sub) return;
    notice.textContent = "This view was changed; it now shows its new definition.";
    show(fresh);
  }

  // The subscription is over for good: say why and stop.
  function ended(reason) {
    if (sub) sub.close();
    sub = null;
    const why = reason === "view_deleted"
      ? "This view was deleted."
      : "This view is no longer shared with you.";
    total.textContent = "–";
    editButton.disabled = true;
    notice.textContent = "";
    wrap.replaceWith(el("p", { class: "error", role: "alert", dataset: { ended: reason } },
      why, " ", el("a", { href: "/views" }, "Back to all views")));
  }

  // Fetch more when the reader nears the end, or when the rows do not fill the box.
  function fillUp() {
    if (!sub || !sub.ready) return;
    if (wrap.scrollTop + wrap.clientHeight > wrap.scrollHeight - 300 && sub.rows.size < sub.total) {
      sub.fetch(PAGE);
    }
  }
  wrap.addEventListener("scroll", fillUp, { passive: true });

  editButton.addEventListener("click", async () => {
    const saved = await openEditor({ schema, api, view });
    if (saved) show(saved);
    editButton.focus();
  });
  show(view);
}

main();

class LiveTable {
  constructor(view, columns, labels, { api, notice }) {
    this.view = view;
    this.columns = columns;
    this.api = api;
    this.notice = notice;
    this.trs = new Map(); // id -> tr
    this.body = el("tbody");
    this.node = el(
      "table",
      { class: "live", dataset: { view: view.id }, "aria-labelledby": "view-title" },
      el("thead", {}, el("tr", {}, columns.map((c) => el("th", { scope: "col", dataset: { column: c } }, labels[c] || c)))),
      this.body,
    );
  }

  apply(sub, change, wrap) {
    const anchor = this.anchor(wrap);
    const rows = sub.sorted(this.view.sort);
    const keep = new Set(rows.map((r) => r.id));
    for (const [id, tr] of this.trs) {
      if (!keep.has(id)) {
        tr.remove();
        this.trs.delete(id);
      }
    }
    const touched = new Set(change.upserted);
    let previous = null;
    for (const row of rows) {
      let tr = this.trs.get(row.id);
      const fresh = !tr;
      if (fresh) {
        tr = el("tr", { dataset: { id: row.id } });
        this.trs.set(row.id, tr);
      }
      if (fresh || String(row.version) !== tr.dataset.version) {
        this.fill(tr, row);
        if (!change.snapshot && !change.page && touched.has(row.id)) this.flash(tr);
      }
      // Move only what is out of place: a steady table is cheap and keeps focus.
      const expected = previous ? previous.nextSibling : this.body.firstChild;
      if (expected !== tr) this.body.insertBefore(tr, expected);
      previous = tr;
    }
    this.restore(wrap, anchor);
  }

  // The first row in sight and where it is, so that rows arriving above it do not
  // push it away. At the very top the reader sees new rows arrive.
  anchor(wrap) {
    if (wrap.scrollTop <= 0) return null;
    const top = wrap.scrollTop;
    for (const tr of this.body.children) {
      if (tr.offsetTop + tr.offsetHeight > top) return { tr, offset: tr.offsetTop - top };
    }
    return null;
  }

  restore(wrap, anchor) {
    if (!anchor || !anchor.tr.isConnected) return;
    wrap.scrollTop = anchor.tr.offsetTop - anchor.offset;
  }

  flash(tr) {
    tr.classList.remove("changed");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("changed");
  }

  fill(tr, row) {
    tr.dataset.version = String(row.version);
    const cells = this.columns.map((column) => {
      const td = el("td", { dataset: { column } });
      if (column === "id") this.idCell(td, row);
      else if (column === "contact") this.contactCell(td, row);
      else {
        td.textContent = cellText(column, row[column]);
        if (column === "status" && row.status) td.className = `status-${row.status}`;
        if (column === "has_recording" && row.has_recording) td.textContent = "▶ Yes";
      }
      return td;
    });
    // An inline player that is playing stays: only its row's other cells change.
    const playing = tr.querySelector("td[data-column='id'] audio");
    tr.replaceChildren(...cells);
    if (playing) tr.querySelector("td[data-column='id']").append(playing);
  }

  idCell(td, row) {
    if (row.has_recording) {
      td.append(el("button", {
        type: "button", class: "play", "aria-label": `Play the recording of ${row.id}`, title: "Play the recording",
        onclick: (event) => this.play(td, row.id, event.currentTarget),
      }, "▶"));
    }
    td.append(el("a", { href: `/conversations/${encodeURIComponent(row.id)}` }, row.id));
  }

  async play(td, id, button) {
    const existing = td.querySelector("audio");
    if (existing) {
      existing.paused ? existing.play() : existing.pause();
      return;
    }
    button.disabled = true;
    const tr = td.closest("tr"); // fill() keeps the row and replaces its cells
    try {
      const detail = await this.api("GET", `/api/v1/conversations/${encodeURIComponent(id)}`);
      const recording = detail.recordings[detail.recordings.length - 1];
      if (!recording) throw new Error("no recording yet");
      const audio = await recordingPlayer(this.api, id, recording, (error) => {
        this.notice.textContent = `The recording of ${id} cannot play: ${error.message}`;
      });
      // The row may have been redrawn while the link was minted: its id cell now.
      ((tr && tr.querySelector("td[data-column='id']")) || td).append(audio);
      await audio.play();
    } catch (error) {
      this.notice.textContent = `The recording of ${id} cannot play: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }

  contactCell(td, row) {
    td.append(el("span", { class: "contact" }, cellText("contact", row.contact)));
    if (!row.contact || !PHONE.test(row.contact)) return;
    // One idempotency key per showing of the actions: a double click, or a retry of
    // a request whose answer was lost, starts one conversation.
    let key = null;
    const fresh = () => { key = idempotencyKey(); };
    td.addEventListener("mouseenter", fresh);
    td.addEventListener("focusin", (event) => { if (!td.contains(event.relatedTarget)) fresh(); });
    const start = async (button, body) => {
      if (button.disabled) return;
      button.disabled = true;
      key = key || idempotencyKey();
      try {
        const answer = await this.api("POST", "/api/v1/conversations/initiate", body, { "Idempotency-Key": key });
        this.notice.textContent = `Started ${body.channel} to ${body.contact}: conversation ${answer.conversation_id}.`;
      } catch (error) {
        this.notice.textContent = `Could not start a ${body.channel} to ${body.contact}: ${error.message}`;
      } finally {
        button.disabled = false;
      }
    };
    const call = el("button", {
      type: "button", "aria-label": `Call ${row.contact}`, dataset: { action: "call" },
      onclick: (event) => start(event.currentTarget, { channel: "call", contact: row.contact }),
    }, "Call");
    const message = el("button", {
      type: "button", "aria-label": `Message ${row.contact}`, dataset: { action: "message" },
      onclick: async (event) => {
        const button = event.currentTarget;
        const body = await askMessage(row.contact, row.channel === "whatsapp" ? "whatsapp" : "sms");
        if (body) await start(button, body);
        button.focus();
      },
    }, "Message");
    td.append(el("span", { class: "contact-actions" }, call, message));
  }
}

// The message dialog: channel and first text. Resolves with an initiate body or null.
function askMessage(contact, channel) {
  const dialog = el("dialog", { "aria-labelledby": "message-title", "aria-modal": "true" });
  const select = el("select", { id: "message-channel" }, el("option", { value: "sms" }, "SMS"), el("option", { value: "whatsapp" }, "WhatsApp"));
  select.value = channel;
  const text = el("textarea", { id: "message-text", rows: 3, required: true, maxlength: 4096 });
  let body = null;
  const form = el("form", {
    onsubmit: (event) => {
      event.preventDefault();
      if (!text.value.trim()) return;
      body = { channel: select.value, contact, text: text.value };
      dialog.close();
    },
  },
  el("h2", { id: "message-title" }, `Message ${contact}`),
  el("div", { class: "row" }, el("label", { for: "message-channel" }, "Channel"), select),
  el("label", { for: "message-text" }, "Message"), text,
  el("div", { class: "actions" },
    el("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
    el("button", { type: "submit", class: "primary" }, "Send")));
  dialog.append(form);
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(body);
    });
    dialog.showModal();
    text.focus();
  });
}
