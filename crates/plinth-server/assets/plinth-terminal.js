// Plinth's serial console in the browser: xterm.js over the console WebSocket.
//
// The page holds <div id="terminal" data-instance="ins_…">. This script mints a one-time
// ticket (POST /instances/{id}/console/ticket, same-origin, with the session cookie), opens
// /instances/{id}/console/ws and sends the ticket as the first frame; the server answers
// {"type":"ready","read_only":…}, then the console's history and its output as it comes.
// Typed keys go back as {"input": …}, gathered for up to 50 ms or until Enter. A closed
// socket reconnects with a fresh ticket (the history is drawn again, from a reset screen).
"use strict";
(function () {
  const el = document.getElementById("terminal");
  if (!el || typeof Terminal === "undefined" || typeof FitAddon === "undefined") return;
  const id = el.dataset.instance;
  const status = document.getElementById("terminal-status");
  const history = document.getElementById("console-history");
  const term = new Terminal({ convertEol: true, scrollback: 10000, screenReaderMode: true, fontSize: 13 });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.addEventListener("resize", () => fit.fit());
  if (history) history.hidden = true;

  let ws = null;
  let readOnly = true;
  let pending = "";
  let timer = null;
  let retry = 0;
  const say = (text) => { if (status) status.textContent = text; };

  function flush() {
    timer = null;
    if (pending && ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ input: pending }));
      pending = "";
    }
  }

  term.onData((d) => {
    if (readOnly) return;
    pending += d;
    if (d.includes("\r") || pending.length >= 1024) flush();
    else if (!timer) timer = setTimeout(flush, 50);
  });

  function later() {
    retry = Math.min(retry + 1, 5);
    say("Disconnected; reconnecting…");
    setTimeout(connect, 1000 * retry);
  }

  async function connect() {
    say("Connecting…");
    let ticket;
    try {
      const r = await fetch(`/instances/${encodeURIComponent(id)}/console/ticket`, { method: "POST", credentials: "same-origin" });
      if (!r.ok) { say(`The console is not available (${r.status}).`); return; }
      ticket = (await r.json()).ticket;
    } catch (e) {
      later();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${scheme}//${location.host}/instances/${encodeURIComponent(id)}/console/ws`);
    ws.onopen = () => ws.send(JSON.stringify({ ticket }));
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      if (msg.type === "ready") {
        readOnly = msg.read_only;
        retry = 0;
        term.reset();
        el.dataset.state = readOnly ? "read-only" : "ready";
        say(readOnly ? "Connected, read-only: your roles do not allow typing." : "Connected: what you type goes to the guest.");
      } else if (msg.type === "output") {
        term.write(msg.data);
      } else if (msg.type === "error") {
        say(msg.detail);
      }
    };
    ws.onclose = () => {
      el.dataset.state = "closed";
      later();
    };
  }

  connect();
})();
