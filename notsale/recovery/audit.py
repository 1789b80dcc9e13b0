"""`notsale audit`: who bought what in a sale, and which ids behave like one client.

Read from PostgreSQL (every attempt and purchase, each attempt with the client's network)
and from the sale's waiting room in Redis (when each user was admitted; kept until a while
after the sale's close). Changes nothing.

Ids that behave like one client, on one network (either is enough):
- at least CLUSTER_MIN ids that each checked out within REACTION_MS of their admission,
  with reactions within TIMING_SPREAD_MS of each other's (the reason says how many bought
  the limit): people take seconds to pick an item once let in, each their own time;
- at least RUN_MIN ids that joined the queue one after the other, nobody else's join
  between them: people arrive at their own moments among everyone else, a script's ids at
  once. (The order, not the times: a busy service takes joins in bursts, people's too.)
No rule refuses a network: many people behind one NAT are customers.
"""

from __future__ import annotations

import html
import statistics
from collections import defaultdict
from datetime import datetime

import asyncpg
import msgspec

from notsale.config import Settings
from notsale.connections import Client
from notsale.keys import queue_keys
from notsale.store.pool import QUERY_TIMEOUT_S
from notsale.store.terms import TermsBook

CLUSTER_MIN = 3
REACTION_MS = 1000
TIMING_SPREAD_MS = 500
RUN_MIN = 8
# The attempts of a sale, in order: who, from where, when, and what came of it.
ATTEMPTS = (
    "SELECT user_id, coalesce(network::text, '') AS network, item_id, code, outcome,"
    " attempted_at FROM checkout_attempts WHERE sale_id = $1"
    " ORDER BY attempted_at, id"
)
PURCHASES = "SELECT user_id, item_id, code, purchased_at FROM purchases WHERE sale_id = $1"


class Spread(msgspec.Struct, frozen=True):
    """Milliseconds: how many, median, 90th percentile, largest."""

    count: int
    median_ms: int
    p90_ms: int
    max_ms: int


class UserLine(msgspec.Struct, frozen=True):
    user_id: str
    networks: list[str]
    attempts: int
    holds: int  # holds made (codes issued)
    items: int  # bought
    expired: int  # holds that ended unbought
    reaction_ms: int | None  # from admission to first checkout; None: no admission known
    pay_ms: int | None  # median from hold to purchase
    flagged: bool


class NetworkLine(msgspec.Struct, frozen=True):
    network: str
    users: int
    holds: int
    items: int


class Flag(msgspec.Struct, frozen=True):
    network: str
    user_ids: list[str]
    reason: str


class Audit(msgspec.Struct, frozen=True):
    sale_id: int
    user_limit: int
    admissions_known: bool  # the waiting room's record was still in Redis
    attempts: int
    holds: int
    items: int
    expired_holds: int
    admission_to_checkout: Spread | None
    checkout_to_purchase: Spread | None
    flagged: list[Flag]
    users: list[UserLine]
    networks: list[NetworkLine]
    # (second from the first checkout, checkouts of other ids, of flagged ids), for the plot
    timeline_start: str
    timeline: list[tuple[int, int, int]]


def spread(values: list[int]) -> Spread | None:
    if not values:
        return None
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return Spread(len(ordered), int(statistics.median(ordered)), p90, ordered[-1])


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class Queued(msgspec.Struct, frozen=True):
    """A user's ticket, as the sale's waiting room keeps it (times in ms)."""

    joined_ms: int
    admitted_ms: int  # 0: never admitted
    network: str


async def tickets(redis: Client, sale_id: int) -> dict[str, Queued]:
    """Each queued user's ticket, from the sale's waiting room (queue.lua's record)."""
    found: dict[str, Queued] = {}
    async for _, record in redis.hscan_iter(queue_keys(sale_id).tickets):
        user, _, _, _, admitted, joined, network = record.split("\t")
        found[user] = Queued(int(joined), int(admitted), network)
    return found


async def audit(redis: Client, pool: asyncpg.Pool, settings: Settings, sale_id: int) -> Audit:
    terms = await TermsBook(pool, settings).of(sale_id, fix=False)
    attempts = await pool.fetch(ATTEMPTS, sale_id, timeout=QUERY_TIMEOUT_S)
    purchases = await pool.fetch(PURCHASES, sale_id, timeout=QUERY_TIMEOUT_S)
    queued = await tickets(redis, sale_id)
    admitted = {user: t.admitted_ms for user, t in queued.items() if t.admitted_ms}
    bought = {p["code"]: p for p in purchases}
    networks: dict[str, set[str]] = defaultdict(set)
    tried: dict[str, int] = defaultdict(int)
    first: dict[str, int] = {}
    held: dict[str, dict[str, int]] = defaultdict(dict)  # user -> code -> when held
    for a in attempts:
        user = a["user_id"]
        tried[user] += 1
        first.setdefault(user, ms(a["attempted_at"]))
        if a["network"]:
            networks[user].add(a["network"])
        if a["outcome"] == "ok":
            held[user].setdefault(a["code"], ms(a["attempted_at"]))
    for user, ticket in queued.items():
        tried.setdefault(user, 0)
        if ticket.network:
            networks[user].add(ticket.network)
    items: dict[str, int] = defaultdict(int)
    for p in purchases:
        items[p["user_id"]] += 1
    now = ms(datetime.now().astimezone())
    hold_ms = terms.hold_seconds * 1000
    reaction = {u: first[u] - admitted[u] for u in first if u in admitted}
    pay: dict[str, int] = {}
    expired: dict[str, int] = defaultdict(int)
    for user, codes in held.items():
        waits = [ms(bought[c]["purchased_at"]) - at for c, at in codes.items() if c in bought]
        if waits:
            pay[user] = int(statistics.median(waits))
        expired[user] = sum(1 for c, at in codes.items() if c not in bought and at + hold_ms < now)
    flags = flagged(networks, items, reaction, pay, terms.user_limit) + runs(queued)
    marked = {u for f in flags for u in f.user_ids}
    users = sorted(set(tried) | set(items))
    per_network: dict[str, list[str]] = defaultdict(list)
    for user in users:
        for network in networks[user]:
            per_network[network].append(user)
    start = min(first.values(), default=now)
    timeline: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for a in attempts:
        timeline[(ms(a["attempted_at"]) - start) // 1000][a["user_id"] in marked] += 1
    return Audit(
        sale_id=sale_id,
        user_limit=terms.user_limit,
        admissions_known=bool(admitted),
        attempts=len(attempts),
        holds=sum(len(c) for c in held.values()),
        items=len(purchases),
        expired_holds=sum(expired.values()),
        admission_to_checkout=spread(list(reaction.values())),
        checkout_to_purchase=spread(
            [
                ms(bought[c]["purchased_at"]) - at
                for cs in held.values()
                for c, at in cs.items()
                if c in bought
            ]
        ),
        flagged=flags,
        users=[
            UserLine(
                user,
                sorted(networks[user]),
                tried[user],
                len(held[user]),
                items[user],
                expired[user],
                reaction.get(user),
                pay.get(user),
                user in marked,
            )
            for user in users
        ],
        networks=[
            NetworkLine(
                network,
                len(members),
                sum(len(held[u]) for u in members),
                sum(items[u] for u in members),
            )
            for network, members in sorted(per_network.items(), key=lambda n: -len(n[1]))
        ],
        timeline_start=datetime.fromtimestamp(start / 1000).astimezone().isoformat(),
        timeline=[(second, n, f) for second, (n, f) in sorted(timeline.items())],
    )


def flagged(
    networks: dict[str, set[str]],
    items: dict[str, int],
    reaction: dict[str, int],
    pay: dict[str, int],
    limit: int,
) -> list[Flag]:
    """Per network, the largest group of ids that checked out within REACTION_MS of their
    admission, with reactions within TIMING_SPREAD_MS of each other."""
    members: dict[str, list[str]] = defaultdict(list)
    for user, found in networks.items():
        for network in found:
            members[network].append(user)
    flags = []
    for network, users in sorted(members.items()):
        fast = sorted((reaction[u], u) for u in users if reaction.get(u, REACTION_MS) < REACTION_MS)
        best: list[tuple[int, str]] = []
        low = 0
        for high in range(len(fast)):  # the widest window of reactions within the spread
            while fast[high][0] - fast[low][0] > TIMING_SPREAD_MS:
                low += 1
            if high - low + 1 > len(best):
                best = fast[low : high + 1]
        if len(best) >= CLUSTER_MIN:
            ids = sorted(u for _, u in best)
            full = sum(1 for u in ids if items[u] >= limit)
            paid = [pay[u] for u in ids if u in pay]
            flags.append(
                Flag(
                    network,
                    ids,
                    f"{len(ids)} ids checked out within {REACTION_MS} ms of their admission,"
                    f" {best[-1][0] - best[0][0]} ms apart at most; {full} bought the limit"
                    f" ({limit})"
                    + (f", median {int(statistics.median(paid))} ms to pay" if paid else ""),
                )
            )
    return flags


def runs(queued: dict[str, Queued]) -> list[Flag]:
    """Runs of at least RUN_MIN ids of one network that joined the queue one after the
    other, in the order the queue took them (ties in the same millisecond: by network)."""
    order = sorted((t.joined_ms, t.network, user) for user, t in queued.items())
    groups: list[list[tuple[int, str, str]]] = []
    for joined in order:
        if groups and groups[-1][-1][1] == joined[1]:
            groups[-1].append(joined)
        else:
            groups.append([joined])
    return [
        Flag(
            run[0][1],
            sorted(user for _, _, user in run),
            f"{len(run)} ids joined the queue one after the other, nobody else's join between"
            f" them, within {run[-1][0] - run[0][0]} ms",
        )
        for run in groups
        if len(run) >= RUN_MIN and run[0][1]
    ]


def readable(report: Audit) -> str:
    """The audit as tables for a terminal."""
    sale = f"sale {report.sale_id}"
    lines = [
        f"{sale}: {report.attempts} checkouts, {report.holds} holds, {report.items} items"
        f" bought, {report.expired_holds} holds expired unbought",
    ]
    for name, found in (
        ("admission to first checkout", report.admission_to_checkout),
        ("checkout to purchase", report.checkout_to_purchase),
    ):
        if found is None:
            lines.append(f"{name}: not known")
        else:
            lines.append(
                f"{name}: median {found.median_ms} ms, p90 {found.p90_ms} ms, max"
                f" {found.max_ms} ms ({found.count})"
            )
    if not report.admissions_known:
        lines.append("admissions: none in Redis (open mode, or the queue's keys expired)")
    for flag in report.flagged:
        lines.append(f"FLAGGED {flag.network}: {flag.reason}: {', '.join(flag.user_ids)}")
    lines.append("")
    lines.append(f"{'network':<20} {'users':>6} {'holds':>6} {'items':>6}")
    lines += [f"{n.network:<20} {n.users:>6} {n.holds:>6} {n.items:>6}" for n in report.networks]
    lines.append("")
    head = f"{'user':<24} {'attempts':>8} {'holds':>6} {'items':>6} {'expired':>7}"
    lines.append(f"{head} {'react ms':>9} {'pay ms':>7}  flagged  networks")
    for u in report.users:
        react = "-" if u.reaction_ms is None else str(u.reaction_ms)
        paid = "-" if u.pay_ms is None else str(u.pay_ms)
        lines.append(
            f"{u.user_id:<24} {u.attempts:>8} {u.holds:>6} {u.items:>6} {u.expired:>7}"
            f" {react:>9} {paid:>7}  {'yes' if u.flagged else '':<7}  {' '.join(u.networks)}"
        )
    return "\n".join(lines)


PLOT_W, PLOT_H = 760, 220
COLOURS = ("#4a78a8", "#d0452f")  # checkouts of other ids, of flagged ids


def page(report: Audit) -> str:
    """A short HTML report: the summary, the flags, and one plot of checkouts a second,
    the flagged ids' in their own colour. Self-contained (no script, no external file)."""
    seconds = max((second for second, _, _ in report.timeline), default=0) + 1
    top = max((n + f for _, n, f in report.timeline), default=1) or 1
    bar = PLOT_W / seconds
    bars = []
    for second, *values in report.timeline:
        y = float(PLOT_H)
        for value, colour in zip(values, COLOURS, strict=True):
            h = value / top * (PLOT_H - 10)
            y -= h
            if value:
                bars.append(
                    f'<rect x="{second * bar:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}"'
                    f' height="{h:.1f}" fill="{colour}"/>'
                )
    plot = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_W}" height="{PLOT_H + 20}"'
        f' role="img" aria-label="checkouts a second">{"".join(bars)}'
        f'<text x="0" y="{PLOT_H + 15}" font-size="11">0 s</text>'
        f'<text x="{PLOT_W - 40}" y="{PLOT_H + 15}" font-size="11">{seconds} s</text>'
        f'<text x="{PLOT_W - 120}" y="12" font-size="11">top: {top}/s</text></svg>'
    )
    flags = "".join(
        f"<li><b>{html.escape(f.network)}</b>: {html.escape(f.reason)}:"
        f" {html.escape(', '.join(f.user_ids))}</li>"
        for f in report.flagged
    )
    return (
        '<!doctype html>\n<html lang="en"><meta charset="utf-8">'
        f"<title>notsale audit, sale {report.sale_id}</title>"
        "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto}</style>"
        f"<h1>Audit of sale {report.sale_id}</h1>"
        f"<p>Checkouts a second from the first one ({html.escape(report.timeline_start)}):"
        f' <span style="color:{COLOURS[0]}">■ other ids</span>'
        f' <span style="color:{COLOURS[1]}">■ flagged ids</span></p>{plot}'
        f"<h2>Flagged</h2><ul>{flags or '<li>none</li>'}</ul>"
        f"<h2>Report</h2><pre>{html.escape(readable(report))}</pre></html>\n"
    )
