// The view editor's sort: "Sort by" and "then by" keys, each a field of the schema's
// `sortable` and a direction, as many as the schema's `max_sort_keys`. A field one key
// uses is not offered to another (the server refuses it twice). Rows that tie on every
// key go by Conversation ID.

import { el, nextId } from "./common.js";

const DEFAULT_SORT = [{ field: "created_at", dir: "desc" }]; // the server's when none

function directionLabels(field) {
  return field === "created_at"
    ? { asc: "Ascending (oldest first)", desc: "Descending (newest first)" }
    : { asc: "Ascending (A to Z)", desc: "Descending (Z to A)" };
}

// One key: its field and direction are kept here, the selects drawn from them.
class SortKey {
  constructor(field, dir, { onChange, onRemove }) {
    this.fieldName = field;
    this.dirName = dir;
    this.field = el("select", { id: nextId("sort"), onchange: () => { this.fieldName = this.field.value; onChange(); } });
    this.dir = el("select", { "aria-label": "Sort direction", onchange: () => { this.dirName = this.dir.value; } });
    this.title = el("label", { for: this.field.id });
    this.remove = el("button", { type: "button", class: "danger", onclick: () => onRemove(this) }, "✕");
    this.node = el("div", { class: "row sort-key", role: "group" }, this.title, this.field, this.dir, this.remove);
  }

  // Draws the key as the `index`th of `count`, offering only the fields in `offered`.
  draw(index, count, offered, labels) {
    this.field.replaceChildren(...offered.map((f) => el("option", { value: f }, labels[f] || f)));
    this.field.value = this.fieldName;
    const dirs = directionLabels(this.fieldName);
    this.dir.replaceChildren(...["asc", "desc"].map((d) => el("option", { value: d }, dirs[d])));
    this.dir.value = this.dirName;
    this.title.textContent = index === 0 ? "Sort by" : "then by";
    this.node.setAttribute("aria-label", `Sort key ${index + 1}`);
    this.remove.setAttribute("aria-label", `Remove sort key ${index + 1}`);
    this.remove.hidden = count === 1; // a view always has a sort
  }
}

export class SortKeys {
  constructor(sortable, maxKeys, labels, sort) {
    this.maxKeys = maxKeys;
    this.sortable = sortable;
    this.labels = labels;
    this.keys = [];
    this.list = el("div", { class: "sort-keys" });
    this.addButton = el("button", { type: "button", onclick: () => this.add().field.focus() }, "+ Then by");
    this.node = el("fieldset", {},
      el("legend", {}, "Sort"),
      this.list,
      el("div", { class: "row" }, this.addButton, el("span", { class: "muted" }, `Ties go by ${labels.id || "id"}.`)));
    for (const key of sort && sort.length ? sort : DEFAULT_SORT) this.add(key);
  }

  get sort() {
    return this.keys.map((key) => ({ field: key.fieldName, dir: key.dirName }));
  }

  // A new key takes the first field no key uses yet, id last: ties go by id anyway.
  add(given) {
    const used = new Set(this.keys.map((key) => key.fieldName));
    const free = this.sortable.filter((f) => !used.has(f));
    const field = given ? given.field : free.find((f) => f !== "id") || free[0];
    const dir = given ? given.dir || "asc" : field === "created_at" ? "desc" : "asc";
    const key = new SortKey(field, dir, { onChange: () => this.draw(), onRemove: (k) => this.remove(k) });
    this.keys.push(key);
    this.list.append(key.node);
    this.draw();
    return key;
  }

  remove(key) {
    const index = this.keys.indexOf(key);
    this.keys.splice(index, 1);
    key.node.remove();
    this.draw();
    (this.keys[index] || this.keys[index - 1]).field.focus(); // where the removed key was
  }

  draw() {
    this.keys.forEach((key, index) => {
      const taken = new Set(this.keys.filter((k) => k !== key).map((k) => k.fieldName));
      const offered = this.sortable.filter((f) => !taken.has(f));
      key.draw(index, this.keys.length, offered, this.labels);
    });
    this.addButton.disabled = this.keys.length >= Math.min(this.maxKeys, this.sortable.length);
  }
}
