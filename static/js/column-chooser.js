// The view editor's columns: a checkbox per view column, and the chosen ones
// in the order the live table shows them. A chosen column moves with its "Move …
// up" / "Move … down" buttons, or by drag and drop on top of them. Conversation ID
// is always chosen and always first: the server puts it first whatever is sent.

import { el, nextId } from "./common.js";

export class ColumnChooser {
  // columns: [{name, label}] in the server's order; chosen: names in the order shown.
  constructor(columns, chosen) {
    this.labels = Object.fromEntries(columns.map((c) => [c.name, c.label]));
    this.order = chosen.filter((name) => name !== "id" && name in this.labels); // after id
    this.items = new Map(); // column -> {li, up, down}, made once, moved as the order changes
    this.dragged = null; // the column being dragged
    const noteId = nextId("id-fixed-note");
    const orderTitle = nextId("order-title");
    const boxes = columns.map((column) => this.checkbox(column, noteId));
    this.fixed = el("li", { class: "fixed", dataset: { column: "id" } },
      el("span", { class: "name" }, this.labels.id), el("span", { class: "muted" }, "always first"));
    this.list = el("ol", { class: "column-order", "aria-labelledby": orderTitle });
    this.status = el("p", { class: "sr-only", role: "status", "aria-live": "polite" });
    this.node = el("fieldset", {},
      el("legend", {}, "Columns"),
      el("p", { id: noteId, class: "muted hint" }, `${this.labels.id} is always shown, first.`),
      el("div", { class: "column-picker" },
        el("div", { class: "columns-grid" }, boxes),
        el("div", { class: "column-order-box" },
          el("h3", { id: orderTitle }, "Shown in this order"),
          el("p", { class: "muted hint" }, "Drag a column, or use its arrows."),
          this.list,
          this.status)));
    this.render();
  }

  get columns() {
    return ["id", ...this.order];
  }

  checkbox(column, noteId) {
    const id = nextId("col");
    const fixed = column.name === "id";
    const input = el("input", {
      type: "checkbox", id, value: column.name, checked: fixed || this.order.includes(column.name), disabled: fixed,
      dataset: { columnChoice: column.name }, "aria-describedby": fixed ? noteId : undefined,
      onchange: () => {
        // A newly chosen column goes last; the others keep their places.
        if (input.checked) this.order.push(column.name);
        else this.order.splice(this.order.indexOf(column.name), 1);
        this.render();
      },
    });
    return el("span", {}, input, " ", el("label", { for: id }, column.label));
  }

  render() {
    this.list.replaceChildren(this.fixed, ...this.order.map((name) => this.item(name).li));
    this.order.forEach((name, index) => {
      const { up, down } = this.item(name);
      up.disabled = index === 0;
      down.disabled = index === this.order.length - 1;
    });
  }

  // Moves a column by one place and keeps focus on it: on the button pressed while
  // the column can go further that way, else on its other button.
  step(name, by) {
    this.moveTo(name, this.order.indexOf(name) + by);
    const { up, down } = this.item(name);
    const [same, other] = by < 0 ? [up, down] : [down, up];
    (same.disabled ? other : same).focus();
  }

  moveTo(name, to) {
    const from = this.order.indexOf(name);
    if (to < 0 || to >= this.order.length || to === from) return;
    this.order.splice(from, 1);
    this.order.splice(to, 0, name);
    this.render();
    this.status.textContent = `${this.labels[name]} moved to position ${to + 2} of ${this.order.length + 1}.`;
  }

  item(name) {
    const made = this.items.get(name);
    if (made) return made;
    const label = this.labels[name];
    const up = el("button", { type: "button", class: "move", title: "Move up", "aria-label": `Move ${label} up`, onclick: () => this.step(name, -1) }, "↑");
    const down = el("button", { type: "button", class: "move", title: "Move down", "aria-label": `Move ${label} down`, onclick: () => this.step(name, 1) }, "↓");
    const li = el("li", { draggable: "true", dataset: { column: name } },
      el("span", { class: "grip", "aria-hidden": "true" }, "⠿"), el("span", { class: "name" }, label), up, down);
    this.draggable(li, name);
    const item = { li, up, down };
    this.items.set(name, item);
    return item;
  }

  // A dropped column takes the place of the one it is dropped on: the line shows
  // on the side it will land (below when dragged down, above when dragged up).
  draggable(li, name) {
    const clear = () => li.classList.remove("drop-before", "drop-after");
    li.addEventListener("dragstart", (event) => {
      this.dragged = name;
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", this.labels[name]);
      li.classList.add("dragging");
    });
    li.addEventListener("dragend", () => {
      this.dragged = null;
      li.classList.remove("dragging");
    });
    li.addEventListener("dragover", (event) => {
      if (!this.dragged || this.dragged === name) return; // not one of ours: no drop here
      event.preventDefault();
      event.dataTransfer.dropEffect = "move";
      const down = this.order.indexOf(this.dragged) < this.order.indexOf(name);
      li.classList.toggle("drop-after", down);
      li.classList.toggle("drop-before", !down);
    });
    li.addEventListener("dragleave", clear);
    li.addEventListener("drop", (event) => {
      event.preventDefault();
      clear();
      if (this.dragged && this.dragged !== name) this.moveTo(this.dragged, this.order.indexOf(name));
    });
  }
}
