"""``/dashboard``: the whole suite's live figures, without Grafana.

Every service publishes its figures on ``<ns>.stats`` each second (its namespace's own); the gateway's
:class:`~libs.common.stats.Aggregator` adds them up and ``/dashboard/stats`` answers
the sum as JSON. The page is one self-contained HTML document (no external assets,
no build step) that polls that feed every second; ``sluice top`` reads the same feed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from libs.common import names
from libs.common.http import json_response
from libs.common.service import NATS_CLIENT
from libs.common.stats import Aggregator

AGGREGATOR = web.AppKey("aggregator", Aggregator)


async def _aggregate(app: web.Application) -> AsyncIterator[None]:
    aggregator = app[AGGREGATOR] = Aggregator()
    subscription = await app[NATS_CLIENT].subscribe(names.STATS, cb=aggregator.on_message)
    yield
    await subscription.unsubscribe()


async def page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-cache"})


async def stats(request: web.Request) -> web.Response:
    return json_response(
        request.app[AGGREGATOR].dashboard(time.monotonic()), headers={"Cache-Control": "no-cache"}
    )


def add_routes(app: web.Application) -> None:
    """Serve the page and its feed; the gateway starts listening to ``sluice.stats``."""
    app.cleanup_ctx.append(_aggregate)
    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/stats", stats)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sluice: live</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: dark; --bg: #0f1419; --card: #1a2129; --fg: #e6e6e6;
          --dim: #8a96a3; --accent: #5fb3f9; --bad: #ff6b6b; --ok: #7bd88f; }
  * { box-sizing: border-box; }
  body { margin: 0; padding: 20px; background: var(--bg); color: var(--fg);
         font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
  header { display: flex; align-items: baseline; gap: 16px; margin-bottom: 16px; }
  h1 { margin: 0; font-size: 20px; }
  #updated { color: var(--dim); }
  #state.stale { color: var(--bad); }
  .grid { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); }
  .card { background: var(--card); border-radius: 8px; padding: 12px 14px; }
  .card .label { color: var(--dim); font-size: 12px; text-transform: uppercase; }
  .card .value { font-size: 28px; font-variant-numeric: tabular-nums; color: var(--accent); }
  .wide { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
          margin-top: 12px; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: right; padding: 3px 6px; }
  th:first-child, td:first-child { text-align: left; color: var(--dim); }
  h2 { font-size: 13px; margin: 0 0 8px; color: var(--dim); text-transform: uppercase; }
</style>
</head>
<body>
<header>
  <h1>sluice <span id="namespace" title="SLUICE_NAMESPACE"></span></h1>
  <span id="state">connecting&hellip;</span>
  <span id="updated"></span>
</header>
<div class="grid">
  <div class="card"><div class="label">streams running</div><div class="value" id="streams_running">-</div></div>
  <div class="card"><div class="label">streams queued</div><div class="value" id="streams_queued">-</div></div>
  <div class="card"><div class="label">tokens / s</div><div class="value" id="tokens_per_s">-</div></div>
  <div class="card"><div class="label">open connections</div><div class="value" id="open_connections">-</div></div>
  <div class="card"><div class="label">streams ended / s</div><div class="value" id="finished_per_s">-</div></div>
  <div class="card"><div class="label">runners alive</div><div class="value" id="runners_alive">-</div></div>
  <div class="card"><div class="label">slots in use</div><div class="value" id="slots">-</div></div>
  <div class="card"><div class="label">wasted tokens</div><div class="value" id="waste">-</div></div>
</div>
<div class="wide">
  <div class="card"><h2>latency (ms, last <span id="window">60</span> s)</h2>
    <table><thead><tr><th></th><th>p50</th><th>p95</th><th>p99</th><th>n</th></tr></thead>
    <tbody id="latency"></tbody></table></div>
  <div class="card"><h2>streams ended</h2><table><tbody id="finished"></tbody></table></div>
  <div class="card"><h2>errors</h2><table><tbody id="errors"></tbody></table></div>
  <div class="card"><h2>disconnects, resumes, waste</h2><table><tbody id="delivery"></tbody></table></div>
  <div class="card"><h2>instances</h2><table><tbody id="instances"></tbody></table></div>
</div>
<script>
"use strict";
const LATENCY = [["ttft_ms", "time to first token (model)"], ["first_frame_ms", "first frame (streamer)"],
  ["delivery_ms", "token delivery lag"], ["queue_wait_ms", "queue wait"],
  ["cancel_to_stop_ms", "cancel to stop"], ["continuation_stall_ms", "stall when an answer moved"]];
const num = (v, digits) => v === null || v === undefined ? "-" :
  Number(v).toLocaleString("en-US", {maximumFractionDigits: digits ?? 0});
function setText(id, text) { document.getElementById(id).textContent = text; }
function rows(id, entries) {
  const body = document.getElementById(id);
  body.replaceChildren(...entries.map(cells => {
    const tr = document.createElement("tr");
    tr.replaceChildren(...cells.map(cell => {
      const td = document.createElement("td"); td.textContent = cell; return td; }));
    return tr;
  }));
  if (!entries.length) rows(id, [["none", ""]]);
}
const breakdown = (totals, family) => Object.entries(totals[family] || {})
  .filter(([, v]) => v > 0).sort().map(([k, v]) => [k || "all", num(v)]);
function render(d) {
  setText("streams_running", num(d.streams_running));
  setText("streams_queued", num(d.streams_queued));
  setText("tokens_per_s", num(d.tokens_per_s, 1));
  setText("open_connections", num(d.open_connections));
  setText("finished_per_s", num(d.finished_per_s, 2));
  setText("runners_alive", num(d.runners_alive));
  setText("slots", num(d.streams_running) + " / " + num(d.slots_total));
  const wasted = Object.values(d.totals.sluice_tokens_wasted || {}).reduce((a, b) => a + b, 0);
  setText("waste", num(wasted) + (d.waste_ratio === null ? "" : " (" + num(100 * d.waste_ratio, 1) + "%)"));
  setText("window", num(d.window_s));
  rows("latency", LATENCY.map(([key, name]) =>
    [name, num(d[key].p50, 1), num(d[key].p95, 1), num(d[key].p99, 1), num(d[key].count)]));
  rows("finished", breakdown(d.totals, "sluice_streams_finished"));
  rows("errors", [...breakdown(d.totals, "sluice_http_errors"),
    ...breakdown(d.totals, "sluice_coordinator_rejections").map(([k, v]) => ["rejected: " + k, v]),
    ...breakdown(d.totals, "sluice_runner_lost").map(([, v]) => ["runner lost", v]),
    ...breakdown(d.totals, "sluice_continuations").map(([k, v]) => ["moved: " + k, v]),
    ...breakdown(d.totals, "sluice_tokens_recomputed").map(([, v]) => ["tokens recomputed", v])]);
  rows("delivery", [...breakdown(d.totals, "sluice_streamer_disconnects").map(([k, v]) => ["disconnect: " + k, v]),
    ...breakdown(d.totals, "sluice_streamer_resumes").map(([, v]) => ["resumes", v]),
    ...breakdown(d.totals, "sluice_tokens_wasted").map(([k, v]) => ["wasted: " + k, v])]);
  setText("namespace", d.namespace);
  rows("instances", Object.entries(d.instances).sort().map(([k, v]) => [k, num(v)]));
}
async function poll() {
  try {
    const answer = await fetch("dashboard/stats" + location.search, {cache: "no-store"});
    if (!answer.ok) throw new Error(answer.status);
    render(await answer.json());
    setText("state", "live"); document.getElementById("state").className = "";
    setText("updated", "updated " + new Date().toLocaleTimeString());
    document.body.dataset.ready = "1";
  } catch (err) {
    setText("state", "no data: " + err.message); document.getElementById("state").className = "stale";
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
"""
