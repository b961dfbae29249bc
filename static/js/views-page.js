// /views: the views a supervisor may open, private and shared, each with its live
// row count (a `limit: 0` subscription), and the dialog that creates one.

import { el, humanize, showConnection, signIn } from "./common.js";
import { Live } from "./live.js";
import { openEditor } from "./view-editor.js";

async function main() {
  const session = await signIn(["supervisor", "admin"]);
  if (!session) return;
  const { token, api } = session;
  const live = new Live(token);
  showConnection(live);
  const schema = await api("GET", "/api/v1/view-schema");
  const root = document.getElementById("main");
  const list = el("ul", { class: "views", "aria-label": "Views" });
  const newButton = el("button", { class: "primary", type: "button" }, "New view");
  root.replaceChildren(
    el("section", { class: "card", "aria-labelledby": "views-title" },
      el("div", { class: "row" }, el("h2", { id: "views-title" }, "Views"), el("span", { class: "spacer" }), newButton),
      list),
  );
  const counts = new Map(); // view id -> subscription
  const labels = Object.fromEntries(schema.columns.map((c) => [c.name, c.label]));

  async function load() {
    const { views } = await api("GET", "/api/v1/views");
    for (const sub of counts.values()) sub.close();
    counts.clear();
    if (!views.length) {
      list.replaceChildren(el("li", { class: "muted" }, "No views yet: create one."));
      return;
    }
    list.replaceChildren(...views.map((view) => {
      const count = el("span", { class: "count", "aria-label": `Conversations in ${view.name}` }, "…");
      counts.set(view.id, live.subscribe(view.id, 0, {
        onChange: (sub) => { count.textContent = String(sub.total); },
      }));
      return el("li", { dataset: { viewId: view.id } },
        el("span", { class: "view-name" },
          el("a", { href: `/views/${encodeURIComponent(view.id)}` }, view.name),
          el("span", { class: "muted summary" }, summary(view, labels))),
        el("span", { class: "tag" }, view.visibility === "tenant" ? "Shared" : "Private"),
        count);
    }));
  }

  newButton.addEventListener("click", async () => {
    const saved = await openEditor({ schema, api });
    if (saved) location.assign(`/views/${encodeURIComponent(saved.id)}`);
    else newButton.focus();
  });
  await load();
}

main();

const OPS = { eq: "is", ne: "is not", in: "is", not_in: "is not", contains: "contains", not_contains: "lacks",
  gt: ">", gte: "≥", lt: "<", lte: "≤", between: "between", within: "within", is_empty: "is empty", is_not_empty: "is set" };

// "Channel is WhatsApp or SMS · Created within today": what the view holds, in a line.
function summary(view, labels) {
  const parts = view.filters.map((f) => {
    const values = f.value === undefined ? "" : (Array.isArray(f.value) ? f.value : [f.value]).map(humanize).join(f.op === "between" ? " and " : " or ");
    return `${labels[f.field] || f.field} ${OPS[f.op] || f.op} ${values}`.trim();
  });
  return parts.length ? parts.join(" · ") : "Every conversation";
}
