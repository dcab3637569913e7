// The chat page: one websocket to /ws/<room>, reconnected with exponential backoff.
// Everything user-provided is shown with textContent: never parsed as HTML.
"use strict";

(() => {
  const { room, user: me, socket: path, members: membersUrl } = document.body.dataset;
  const $ = (id) => document.getElementById(id);
  const pane = $("pane");
  const log = $("log");
  const status = $("status");
  const input = $("text");
  const send = $("send");

  const MIN_DELAY = 1; // seconds before the first reconnection...
  const MAX_DELAY = 30; // ...doubling each failed attempt up to this
  const REFRESH = 20; // seconds between two reads of the member list (see refreshMembers)
  let socket = null;
  let failures = 0;
  let wasOnline = false;
  let membersAt = 0;
  let membersVersion = 0;
  let timer = null;
  let unread = 0;

  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const fullDate = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Each name its own hue (the stylesheet picks the lightness for light and dark themes).
  function hue(name) {
    let hash = 0;
    for (const char of name) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return String(hash % 360);
  }

  function setState(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    document.body.dataset.state = state;
    $("retry").hidden = state !== "reconnecting";
  }

  // -- the log ----------------------------------------------------------------

  function show(message) {
    const item = el("li", `entry ${message.type}`);
    const at = new Date(typeof message.time === "number" ? message.time : Date.now());
    const time = el("time", "time", clock.format(at));
    time.dateTime = at.toISOString();
    time.title = fullDate.format(at);
    item.append(time);
    if (message.type === "message") {
      const who = el("span", "who", String(message.user));
      who.style.setProperty("--hue", hue(String(message.user)));
      if (message.user === me) item.classList.add("mine");
      item.append(who, el("span", "text", String(message.text)));
    } else if (message.type === "announcement") {
      item.append(el("span", "tag", "Announcement"), el("span", "text", String(message.text)));
    } else {
      item.append(el("span", "text", String(message.text)));
    }
    // Follow new messages only when the reader is at the bottom already.
    const following = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 48;
    log.append(item);
    if (following || message.user === me) pane.scrollTop = pane.scrollHeight;
    if (document.hidden && message.type !== "notice") {
      unread += 1;
      document.title = `(${unread}) # ${room} · Chat`;
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      document.title = `# ${room} · Chat`;
    }
  });

  function showMembers(members) {
    const names = Object.keys(members).sort((a, b) => a.localeCompare(b));
    $("members").replaceChildren(
      ...names.map((name) => {
        const item = el("li", name === me ? "member me" : "member");
        item.dataset.user = name;
        const dot = el("span", "dot");
        dot.style.setProperty("--hue", hue(name));
        item.append(dot, el("span", "name", name));
        if (name === me) item.append(el("span", "note", "you"));
        if (members[name] > 1) item.append(el("span", "note", `${members[name]} tabs`));
        return item;
      }),
    );
    $("member-count").textContent = String(names.length);
  }

  // -- the connection -----------------------------------------------------------

  function enable(on) {
    input.disabled = !on;
    send.disabled = !on;
    if (on) input.focus();
  }

  function connect() {
    clearInterval(timer);
    setState("connecting", "Connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = (socket = new WebSocket(`${scheme}://${location.host}${path}`));
    ws.onopen = () => {
      failures = 0;
      wasOnline = true;
      setState("online", "Online");
      enable(true);
    };
    ws.onmessage = (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === "welcome") {
        $("worker").textContent = `Served by worker process ${message.worker}`;
      } else if (message.type === "members") {
        if (message.at >= membersAt) {
          membersAt = message.at; // the newest list wins, whichever worker read it
          membersVersion += 1;
          showMembers(message.members);
        }
      } else {
        show(message);
      }
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = null;
      enable(false);
      $("worker").textContent = "";
      if (wasOnline) {
        wasOnline = false;
        show({ type: "notice", text: "Connection lost." });
      }
      retryLater();
    };
  }

  function retryLater() {
    // 1, 2, 4, 8, 16, 30, 30... seconds, each between 80% and 100% of that: a restarted server
    // is not met by every page at the same instant.
    const base = Math.min(MAX_DELAY, MIN_DELAY * 2 ** failures);
    failures += 1;
    const due = Date.now() + base * (0.8 + 0.2 * Math.random()) * 1000;
    const tick = () => {
      const left = Math.ceil((due - Date.now()) / 1000);
      if (left <= 0) {
        connect();
      } else {
        setState("reconnecting", `Reconnecting in ${left} s`);
      }
    };
    tick();
    timer = setInterval(tick, 250);
  }

  // The room publishes its member list when someone joins or leaves. A worker that dies
  // says nothing: its members drop out of the presence counts a few seconds later, which
  // the room hears of at its next join or leave, or from this read, whichever comes first.
  async function refreshMembers() {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const version = membersVersion;
    try {
      const response = await fetch(membersUrl, { cache: "no-store" });
      if (!response.ok) return;
      const info = await response.json();
      if (version === membersVersion) showMembers(info.presence); // unless a newer list came meanwhile
    } catch {
      // offline: the websocket's state says so
    }
  }

  setInterval(refreshMembers, REFRESH * 1000);
  $("retry").addEventListener("click", connect);

  $("say").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(text);
    input.value = "";
  });

  connect();
})();
