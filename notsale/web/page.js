"use strict";
// The buyers' page: only the public routes of docs/api.md. It polls the open sales and the
// shown grid page every POLL_MS; the service keeps both answers for a second per worker.
// While nothing changes, polls back off (doubling up to POLL_MAX_MS); a change seen, or
// anything the buyer does, polls at POLL_MS again. The buyer's purchases change only
// through what the buyer does: they are read then, not at every poll.
const POLL_MS = 2000, POLL_MAX_MS = 16000, PAGE = 60, CARDS = 4;
let pollMs = POLL_MS, timer = null, seen = "";
const state = { sale: null, sales: [], from: 1, hold: null, queue: null, queueSale: null, next: null };
const $ = (id) => document.getElementById(id);
const user = $("user");
user.value = localStorage.getItem("notsale.user") || "";
// In queue mode (the service says so in the page's head) checkouts need an admission from
// the sale's queue: the waiting room box joins it, polls as told, and shows the place.
const MODE = document.querySelector('meta[name="notsale-admission"]');
const QUEUED = MODE.content === "queue", PREQUEUE_MS = 1000 * Number(MODE.dataset.prequeue || 0);
let queueTimer = null;

function el(tag, props, ...children) {
  const node = Object.assign(document.createElement(tag), props || {});
  node.append(...children);
  return node;
}

async function call(method, path, query, json) {
  const url = path + (query ? "?" + new URLSearchParams(query) : "");
  const sent = json ? { method, body: JSON.stringify(json), headers: { "Content-Type": "application/json" } } : { method };
  const response = await fetch(url, sent);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || response.statusText);
  return body;
}

function say(text) { $("message").textContent = text || ""; }

async function loadSales() {
  const { sales } = await call("GET", "/sales");
  state.sales = sales;
  if (!sales.some((s) => s.sale_id === state.sale)) {
    state.sale = sales.length ? sales[0].sale_id : null;
    state.from = 1;
  }
  // The newest few as cards (and the chosen one), every open sale in the list beside them.
  const shown = sales.filter((s, i) => i < CARDS || s.sale_id === state.sale);
  const more = el("select", { id: "more", title: "every open sale" },
    ...sales.map((s) => el("option", { value: s.sale_id, selected: s.sale_id === state.sale,
      textContent: `sale ${s.sale_id}: ${s.remaining} left` })));
  more.onchange = () => { state.sale = Number(more.value); state.from = 1; refresh(); };
  $("sales").replaceChildren(...shown.map((s) => {
    const card = el("div", { className: "sale" + (s.sale_id === state.sale ? " chosen" : "") },
      el("small", { textContent: `sale ${s.sale_id}` + (s === sales[0] ? " (running)" : "") }),
      el("b", { className: "remaining", textContent: s.remaining }), ` of ${s.size} left`,
      el("small", { textContent: `${s.sold} sold, ${s.held} held; closes ${new Date(s.closes_at).toLocaleString()}` }));
    card.dataset.sale = s.sale_id;
    card.onclick = () => { state.sale = s.sale_id; state.from = 1; refresh(); };
    return card;
  }), more);
  return sales;
}

async function loadGrid() {
  const sale = state.sales.find((s) => s.sale_id === state.sale);
  if (!sale) { $("grid").replaceChildren(); return; }
  const page = await call("GET", `/sales/${sale.sale_id}/items`, { from: state.from, count: PAGE });
  const last = Math.min(state.from + PAGE - 1, sale.size);
  $("range").textContent = `items ${state.from}–${last} of ${sale.size}`;
  $("prev").disabled = state.from === 1;
  $("next").disabled = last >= sale.size;
  $("grid").replaceChildren(...page.items.map((item) => {
    const tile = el("div", { className: "item " + item.status, title: item.name },
      el("img", { src: item.image_url, alt: item.name, loading: "lazy" }),
      el("div", { className: "name", textContent: item.name }),
      el("div", { className: "status", textContent: item.status }));
    tile.dataset.item = item.item_id;
    if (item.status !== "sold") tile.onclick = () => checkout(item);
    return tile;
  }));
  return page.items;
}

async function loadPurchases() {
  const who = user.value.trim();
  if (!who || state.sale === null) return;
  const { purchases } = await call("GET", `/users/${encodeURIComponent(who)}/purchases`, { sale_id: state.sale });
  $("purchases").replaceChildren(el("h2", { textContent: "Your purchases" }),
    purchases.length
      ? el("ul", {}, ...purchases.map((p) => el("li", { textContent: `${p.name} (item ${p.item_id})` })))
      : el("p", { textContent: "None yet in this sale." }));
}

function ticketKey(sale) { return `notsale.ticket.${sale}.${user.value.trim()}`; }

async function joinQueue(sale) {
  const who = user.value.trim();
  if (!who) { say("Type a user id first."); user.focus(); return; }
  try {
    showQueue(await call("POST", `/sales/${sale}/queue`, { user_id: who }));
  } catch (error) { say(error.message); }
}

async function pollQueue() {
  clearTimeout(queueTimer);
  const sale = state.queueSale, ticket = localStorage.getItem(ticketKey(sale));
  if (!ticket) { showQueue(null); return; }
  const response = await fetch(`/sales/${sale}/queue?` + new URLSearchParams({ ticket }));
  const body = await response.json().catch(() => ({}));
  if (response.status === 429) {  // too early: wait as told
    queueTimer = setTimeout(pollQueue, 1000 * Number(response.headers.get("Retry-After") || 1));
  } else if (response.ok) {
    showQueue(body);
  } else {
    if (body.error === "ticket_invalid") localStorage.removeItem(ticketKey(sale));
    showQueue(null);
    say(body.detail || response.statusText);
  }
}

function showQueue(ticket) {
  clearTimeout(queueTimer);
  const box = $("queue"), sale = state.queueSale;
  state.queue = ticket;
  box.hidden = !QUEUED || sale === null;
  if (box.hidden) return;
  const title = el("h2", { textContent: `Queue of sale ${sale}` });
  if (!ticket) {
    const join = el("button", { id: "join", textContent: "Join the queue" });
    join.onclick = () => joinQueue(sale);
    box.replaceChildren(title, el("p", { textContent: "This sale admits buyers in queue order." }), join);
    return;
  }
  localStorage.setItem(ticketKey(sale), ticket.ticket);
  let line;
  if (ticket.admitted) {
    line = el("p", { id: "queue-state" }, el("b", { textContent: "You're in!" }),
      " Your admission expires in ", el("b", { id: "admission-countdown" }), ".");
  } else if (ticket.remaining === 0) {
    line = el("p", { id: "queue-state", textContent: "Sold out: nothing is left to hold." });
  } else if (ticket.position === null) {
    line = el("p", { id: "queue-state", textContent: "You are in the pre-queue: places are drawn when the sale starts." });
  } else {
    const eta = ticket.eta_seconds === null ? "" : `, about ${ticket.eta_seconds} s to wait`;
    line = el("p", { id: "queue-state" }, "Your place: ", el("b", { textContent: ticket.position }), eta + ".");
  }
  box.replaceChildren(title, line, el("small", { textContent: `${ticket.remaining} items left · ticket ${ticket.ticket_id.slice(0, 8)}` }));
  queueTimer = setTimeout(pollQueue, ticket.poll_after_ms);
  tick();
}

// The sale whose queue the box shows: the one the buyer holds a ticket of while it is open
// and has items left; else the next one while its pre-queue is open; else the chosen one;
// else (none open: sold out, say) the running one.
async function loadQueue() {
  if (!QUEUED) return;
  const running = await call("GET", "/sales/current");
  const mine = state.queue;
  const live = mine && mine.remaining > 0 && state.sales.some((s) => s.sale_id === mine.sale_id);
  const nextOpens = new Date(running.ends_at) - Date.now() <= PREQUEUE_MS;
  const sale = live ? mine.sale_id : nextOpens ? running.sale_id + 1 : (state.sale ?? running.sale_id);
  if (sale !== state.queueSale || (!state.queue && !queueTimer)) {
    state.queueSale = sale;
    await pollQueue();
  }
}

async function checkout(item) {
  const who = user.value.trim();
  if (!who) { say("Type a user id first."); user.focus(); return; }
  say("");
  try {
    const query = { user_id: who, id: item.item_id, sale_id: state.sale };
    const queue = state.queue;
    if (queue && queue.admitted && queue.sale_id === state.sale) query.admission = queue.admission;
    const hold = await call("POST", "/checkout", query);
    state.hold = hold;
    showHold();
    refresh();
  } catch (error) { say(error.message); }
}

function showHold() {
  const hold = state.hold;
  if (!hold) return;
  const buy = el("button", { id: "buy", textContent: "Buy" });
  buy.onclick = async () => {
    buy.disabled = true;
    try {
      const bought = await call("POST", "/purchase", null, { code: hold.code });  // not in the URL: proxies log URLs
      state.hold = null;
      $("hold").replaceChildren(el("h2", { textContent: "Bought" }), el("p", { textContent: bought.name }));
      refresh();
    } catch (error) { say(error.message); buy.disabled = false; }
  };
  $("hold").replaceChildren(el("h2", { textContent: "Your hold" }),
    el("img", { src: hold.image_url, alt: hold.name }),
    el("p", {}, el("b", { textContent: hold.name }), el("br"), `item ${hold.item_id} of sale ${hold.sale_id}`),
    el("p", {}, "code ", el("code", { id: "code", textContent: hold.code })),
    el("p", {}, "expires in ", el("b", { id: "countdown" })), buy);
  tick();
}

function tick() {
  $("clock").textContent = new Date().toLocaleTimeString();
  const admission = state.queue && $("admission-countdown");
  if (admission) {
    const s = Math.max(0, Math.round((new Date(state.queue.admission_expires_at) - Date.now()) / 1000));
    admission.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }
  const left = state.hold && $("countdown");
  if (!left) return;
  const seconds = Math.max(0, Math.round((new Date(state.hold.expires_at) - Date.now()) / 1000));
  left.textContent = `${seconds} s`;
  if (seconds === 0) { state.hold = null; $("hold").replaceChildren(el("h2", { textContent: "Hold expired" })); }
}

async function refresh(byBuyer = true) {
  clearTimeout(timer);
  try {
    const sales = await loadSales();
    const [items] = await Promise.all([loadGrid(), byBuyer ? loadPurchases() : null, loadQueue()]);
    const now = JSON.stringify([sales, items]);
    pollMs = byBuyer || now !== seen ? POLL_MS : Math.min(2 * pollMs, POLL_MAX_MS);
    seen = now;
  } catch (error) { say(error.message); pollMs = POLL_MS; }
  clearTimeout(timer);
  timer = setTimeout(() => refresh(false), pollMs);
}

user.onchange = () => {
  localStorage.setItem("notsale.user", user.value.trim());
  state.queueSale = null;  // another user: their own ticket, if any
  refresh();
};
$("prev").onclick = () => { state.from = Math.max(1, state.from - PAGE); refresh(); };
$("next").onclick = () => { state.from += PAGE; refresh(); };
refresh();
setInterval(tick, 1000);
