// /views: the views a supervisor may open, private and shared, each with its live
// row count (a `limit: 0` subscription), and the dialog that creates one.

import { el, showConnection, signIn } from "./common.js";
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
        el("a", { href: `/views/${encodeURIComponent(view.id)}` }, view.name),
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
