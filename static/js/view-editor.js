// The dialog that creates or edits a view: name, sharing, a filter builder (fields
// and operators by type, relative dates, every condition must hold), the columns in
// the order shown with Conversation ID fixed first (column-chooser.js), and up to
// three sort keys (sort-keys.js). The server validates again and its 422 message is
// shown as it is.

import { ColumnChooser } from "./column-chooser.js";
import { el, humanize, nextId } from "./common.js";
import { SortKeys } from "./sort-keys.js";

const OPERATOR_LABELS = {
  eq: "is", ne: "is not", in: "is any of", not_in: "is none of", contains: "contains",
  not_contains: "does not contain", gt: "after / more than", gte: "from / at least",
  lt: "before / less than", lte: "until / at most", between: "between", within: "within",
  is_empty: "is empty", is_not_empty: "is not empty",
};
const WITHIN_LABELS = {
  today: "Today", yesterday: "Yesterday", last_1h: "Last hour", last_24h: "Last 24 hours",
  last_7d: "Last 7 days", last_30d: "Last 30 days",
};
const NUMBER_OPERATOR_LABELS = { gt: "more than", gte: "at least", lt: "less than", lte: "at most" };
const TIME_OPERATOR_LABELS = { gt: "after", gte: "on or after", lt: "before", lte: "on or before" };
const NEW_VIEW_COLUMNS = new Set(["id", "customer_name", "created_date", "created_time", "channel", "status", "state", "agent_name", "contact"]);

function operatorLabel(kind, op) {
  if (kind === "number") return NUMBER_OPERATOR_LABELS[op] || OPERATOR_LABELS[op];
  if (kind === "date" || kind === "instant") return TIME_OPERATOR_LABELS[op] || OPERATOR_LABELS[op];
  return OPERATOR_LABELS[op];
}

// One condition: field, operator, and a value input that fits both.
class Condition {
  constructor(schema, labels, filter, onRemove) {
    this.schema = schema;
    this.labels = labels;
    const fields = Object.keys(schema.fields);
    this.field = el(
      "select",
      { "aria-label": "Field", onchange: () => this.fieldChanged() },
      fields.map((name) => el("option", { value: name }, labels[name] || name)),
    );
    this.op = el("select", { "aria-label": "Operator", onchange: () => this.renderValue() });
    this.valueBox = el("span", { class: "row" });
    this.node = el(
      "div",
      { class: "condition", role: "group", "aria-label": "Condition" },
      this.field,
      this.op,
      this.valueBox,
      el("button", { type: "button", class: "danger", "aria-label": "Remove this condition", onclick: () => onRemove(this) }, "✕"),
    );
    this.field.value = filter ? filter.field : "channel";
    this.fieldChanged(filter);
  }

  get kind() {
    return this.schema.fields[this.field.value].kind;
  }

  fieldChanged(filter) {
    const { operators } = this.schema.fields[this.field.value];
    this.op.replaceChildren(...operators.map((op) => el("option", { value: op }, operatorLabel(this.kind, op))));
    if (filter) this.op.value = filter.op;
    else if (this.kind === "instant" || this.kind === "date") this.op.value = "within";
    this.renderValue(filter ? filter.value : undefined);
  }

  renderValue(value) {
    const op = this.op.value;
    const kind = this.kind;
    const spec = this.schema.fields[this.field.value];
    let read;
    const box = [];
    if (op === "is_empty" || op === "is_not_empty") {
      read = () => null;
    } else if (op === "within") {
      const select = el(
        "select",
        { "aria-label": "Relative date" },
        this.schema.within.map((name) => el("option", { value: name }, WITHIN_LABELS[name] || humanize(name))),
      );
      if (value) select.value = value;
      box.push(select);
      read = () => select.value;
    } else if (spec.values && (op === "in" || op === "not_in" || kind === "channels")) {
      const chosen = new Set(Array.isArray(value) ? value : value ? [value] : []);
      const boxes = spec.values.map((name) => {
        const id = nextId("v");
        const input = el("input", { type: "checkbox", id, value: name, checked: chosen.has(name) });
        return [input, el("label", { for: id, class: "check" }, humanize(name))];
      });
      box.push(el("span", { class: "row", role: "group", "aria-label": "Values" }, boxes.flat()));
      read = () => {
        const values = boxes.map(([input]) => input).filter((i) => i.checked).map((i) => i.value);
        if (!values.length) throw new Error(`${this.labels[this.field.value]}: choose at least one value`);
        return values;
      };
    } else if (spec.values) {
      const select = el("select", { "aria-label": "Value" }, spec.values.map((name) => el("option", { value: name }, humanize(name))));
      if (value) select.value = value;
      box.push(select);
      read = () => select.value;
    } else if (kind === "boolean") {
      const select = el("select", { "aria-label": "Value" }, el("option", { value: "true" }, "Yes"), el("option", { value: "false" }, "No"));
      if (value === false) select.value = "false";
      box.push(select);
      read = () => select.value === "true";
    } else if (op === "between") {
      const low = this.input(kind, value ? value[0] : undefined, "From");
      const high = this.input(kind, value ? value[1] : undefined, "To");
      box.push(low.node, el("span", {}, "and"), high.node);
      read = () => [low.read(), high.read()];
    } else if (op === "in" || op === "not_in") {
      const input = el("input", { type: "text", "aria-label": "Values, separated by commas", placeholder: "a, b, c", value: Array.isArray(value) ? value.join(", ") : "" });
      box.push(input);
      read = () => {
        const parts = input.value.split(",").map((s) => s.trim()).filter(Boolean);
        if (!parts.length) throw new Error(`${this.labels[this.field.value]}: give at least one value`);
        return kind === "number" ? parts.map(Number) : parts;
      };
    } else {
      const single = this.input(kind, value, "Value");
      box.push(single.node);
      read = single.read;
    }
    this.valueBox.replaceChildren(...box);
    this.read = read;
  }

  // A typed input: number, date (a day in the tenant's zone), instant (this
  // browser's local time, sent as UTC) or text.
  input(kind, value, label) {
    const name = this.labels[this.field.value];
    if (kind === "number") {
      const node = el("input", { type: "number", step: "any", "aria-label": label, value: value ?? "" });
      return { node, read: () => {
        if (node.value === "") throw new Error(`${name}: give a number`);
        return Number(node.value);
      } };
    }
    if (kind === "date") {
      const node = el("input", { type: "date", "aria-label": label, value: value ?? "" });
      return { node, read: () => {
        if (!node.value) throw new Error(`${name}: give a date`);
        return node.value;
      } };
    }
    if (kind === "instant") {
      const local = value ? new Date(new Date(value).getTime() - new Date(value).getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
      const node = el("input", { type: "datetime-local", "aria-label": `${label} (your local time)`, value: local });
      return { node, read: () => {
        if (!node.value) throw new Error(`${name}: give a date and time`);
        return new Date(node.value).toISOString();
      } };
    }
    const node = el("input", { type: "text", "aria-label": label, value: value ?? "" });
    return { node, read: () => node.value };
  }

  toFilter() {
    const value = this.read();
    const filter = { field: this.field.value, op: this.op.value };
    if (value !== null) filter.value = value;
    return filter;
  }
}

// Resolves with the saved view, or null when cancelled.
export function openEditor({ schema, api, view }) {
  const labels = Object.fromEntries(schema.columns.map((c) => [c.name, c.label]));
  const titleId = nextId("editor-title");
  const name = el("input", { id: nextId("name"), type: "text", required: true, maxlength: 200, value: view ? view.name : "" });
  const visibility = el(
    "select",
    { id: nextId("visibility") },
    el("option", { value: "private" }, "Private: only me"),
    el("option", { value: "tenant" }, "Shared with the team"),
  );
  visibility.value = view ? view.visibility : "private";

  const conditions = [];
  const list = el("div", { class: "filters" });
  const remove = (condition) => {
    conditions.splice(conditions.indexOf(condition), 1);
    condition.node.remove();
  };
  const add = (filter) => {
    const condition = new Condition(schema, labels, filter, remove);
    conditions.push(condition);
    list.append(condition.node);
    return condition;
  };
  for (const filter of view ? view.filters : []) add(filter);

  // An edit shows the saved order; a new view starts with the usual ones in the server's order.
  const initial = view ? view.columns : schema.columns.map((c) => c.name).filter((c) => NEW_VIEW_COLUMNS.has(c));
  const columns = new ColumnChooser(schema.columns, initial);
  const sortKeys = new SortKeys(schema.sortable, schema.max_sort_keys, labels, view ? view.sort : []);

  const problem = el("p", { class: "error", role: "alert" });
  const dialog = el("dialog", { "aria-labelledby": titleId, "aria-modal": "true" });
  const form = el(
    "form",
    { method: "dialog" },
    el("h2", { id: titleId }, view ? `Edit view “${view.name}”` : "New view"),
    el("div", { class: "row" },
      el("label", { for: name.id }, "View name"), name,
      el("label", { for: visibility.id }, "Visible to"), visibility),
    el("fieldset", {},
      el("legend", {}, "Filters: a conversation shows when it matches every condition"),
      list,
      el("button", { type: "button", onclick: () => add().field.focus() }, "+ Add condition")),
    columns.node,
    sortKeys.node,
    problem,
    el("div", { class: "actions" },
      el("button", { type: "button", value: "cancel", onclick: () => dialog.close("cancel") }, "Cancel"),
      el("button", { type: "submit", class: "primary", value: "save" }, view ? "Save changes" : "Create view")),
  );
  dialog.append(form);
  document.body.append(dialog);

  return new Promise((resolve) => {
    let saved = null;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      problem.textContent = "";
      let body;
      try {
        body = {
          name: name.value.trim(),
          visibility: visibility.value,
          filters: conditions.map((c) => c.toFilter()),
          columns: columns.columns,
          sort: sortKeys.sort,
        };
        if (!body.name) throw new Error("Name: give the view a name");
      } catch (error) {
        problem.textContent = error.message;
        return;
      }
      try {
        saved = view ? await api("PATCH", `/api/v1/views/${encodeURIComponent(view.id)}`, body) : await api("POST", "/api/v1/views", body);
      } catch (error) {
        problem.textContent = `Not saved: ${error.message}`;
        return;
      }
      dialog.close("save");
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(saved);
    });
    dialog.showModal();
    name.focus();
  });
}
