// /wallboard: large tiles per team for a screen across the room. No interaction:
// it reconnects forever and says how old its figures are when it is not live.

import { duration, el, showConnection, signIn } from "./common.js";
import { Live } from "./live.js";

const percent = (ratio) => (ratio === null || ratio === undefined ? "—" : `${Math.round(ratio * 100)}%`);

function tile(metric, label, value, tone) {
  return el("div", { class: "tile", dataset: { metric } },
    el("div", { class: "label" }, label),
    el("div", { class: `value ${tone || ""}` }, value));
}

function teamCard(name, m, serviceTarget) {
  const agents = m.agents || {};
  const level = m.service_level;
  return el("section", { class: "team", dataset: { team: name }, "aria-label": `Team ${name}` },
    el("h2", {}, name),
    el("div", { class: "tiles" },
      tile("waiting", "Waiting", String(m.waiting ?? 0), m.waiting > 0 ? "alert" : ""),
      tile("longest_wait_s", "Longest wait", duration(m.longest_wait_s ?? 0), m.longest_wait_s > 60 ? "alert" : ""),
      tile("service_level", `Service level`, percent(level), level === null ? "" : level >= serviceTarget ? "good" : "alert"),
      tile("abandon_rate", "Abandon rate", percent(m.abandon_rate), m.abandon_rate > 0.1 ? "alert" : ""),
      el("div", { class: "tile agents", dataset: { metric: "agents" } },
        el("div", { class: "label" }, "Agents"),
        el("div", { class: "value" },
          ["available", "busy", "away", "offline"].map((p) =>
            el("span", { dataset: { presence: p } }, `${agents[p] ?? 0} ${p}`)))),
    ));
}

async function main() {
  const session = await signIn(["wallboard", "supervisor", "admin"]);
  if (!session) return;
  const live = new Live(session.token);
  showConnection(live);
  const root = document.getElementById("main");
  const head = el("div", { class: "wall-head", "aria-live": "off" });
  const wall = el("div", { class: "wall" });
  root.replaceChildren(head, wall);
  let seq = null;

  live.on("wallboard", (frame) => {
    seq = frame.seq;
    const { total, teams } = frame.metrics;
    // Queues are per team; what has none (outgoing work) counts in the totals above.
    const names = Object.keys(teams).filter((n) => n !== "(none)").sort((a, b) => a.localeCompare(b));
    wall.replaceChildren(...names.map((n) => teamCard(n, teams[n], 0.8)));
    head.replaceChildren(
      el("span", {}, "Today: ", el("strong", { dataset: { metric: "answered" } }, String(total.answered ?? 0)), " answered"),
      el("span", {}, el("strong", {}, String(total.active ?? 0)), " active"),
      el("span", {}, el("strong", {}, String(total.waiting ?? 0)), " waiting"),
      el("span", {}, "Avg wait ", el("strong", {}, duration(total.avg_wait_s ?? 0))),
      el("span", {}, "CSAT ", el("strong", {}, total.csat_avg == null ? "—" : total.csat_avg.toFixed(1))),
    );
    wall.dataset.seq = String(seq);
  });
  live.onOpen(() => live.request({ type: "subscribe_wallboard" }).catch(() => {}));
}

main();
