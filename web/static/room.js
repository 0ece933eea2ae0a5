// The meeting room page: one Socket.IO connection to the /meeting namespace (docs/protocol.md).
//
// A fresh room token is fetched before every (re)connection; `join` gives a snapshot, and the
// events that arrive before it are kept and applied after it (each carries a whole version, so
// applying one twice is harmless). Everything people typed is shown with textContent, never as
// HTML. Every string comes from the page's JSON data block, in the reader's language.
"use strict";

(() => {
  const block = document.getElementById("room-data");
  if (!block || typeof io !== "function") return;
  const data = JSON.parse(block.textContent);
  const T = data.text;
  const chairing = data.side === "conciliator";
  const $ = (id) => document.getElementById(id);
  const PAGE = 500; // messages in a resumed snapshot or a `history` answer at most (the server's)

  // ---- text ----------------------------------------------------------------------------------

  function fmt(template, params) {
    return String(template).replace(/%\((\w+)\)s/g, (whole, key) =>
      params && Object.prototype.hasOwnProperty.call(params, key) ? String(params[key]) : whole,
    );
  }

  function errorText(error) {
    const code = error && error.code;
    const template = (code && data.errors[code]) || data.errors.bad_request;
    return fmt(template, (error && error.params) || {});
  }

  function show(id, text) {
    const where = $(id);
    if (where) where.textContent = text || "";
  }

  function el(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const clockFormat = new Intl.DateTimeFormat(data.lang === "it" ? "it-IT" : "en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    timeZone: "Europe/Rome",
  });

  function sideLabel(side) {
    return T["sides_" + side] || "";
  }

  function announce(text) {
    const region = $("announce");
    region.textContent = "";
    window.setTimeout(() => {
      region.textContent = text;
    }, 50);
  }

  // ---- state -----------------------------------------------------------------------------------

  const state = {
    me: null,
    room: null,
    meeting: { starts_at: data.starts_at, ends_at: data.ends_at },
    agreement: null,
    participants: new Map(),
    messages: new Map(),
    lastSeq: 0,
    // Every message up to this seq that the page may read is held: it came in a snapshot, or
    // arrived after all the ones before it. A rejoin asks for what follows it, not lastSeq: a
    // message may have been lost on its way (a node or Redis outage) while later ones arrived.
    syncedSeq: 0,
    full: false, // the snapshot held is an admitted one (with messages)
    joining: 0, // joins sent and not yet answered
    early: [], // events that arrived while a join was being answered
    offset: Date.parse(data.server_time) - Date.now(), // server clock minus ours
    typing: new Map(),
    warned: false,
    over: false, // ended or removed: no reconnection
    signedOut: false,
    tokenRetries: 0,
    unavailable: 0, // connection attempts refused in a row because the service was down
    tokenDown: false, // the last room token request met a 503
    documents: data.documents || [],
  };

  // ---- the connection ----------------------------------------------------------------------------

  async function roomToken() {
    const response = await fetch(data.urls.token, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
      headers: { Accept: "application/json" },
    });
    if (response.type === "opaqueredirect" || response.status === 401) {
      state.signedOut = true;
      throw new Error("signed out");
    }
    if (response.status === 503) {
      // The database or Redis is down for a moment: the connection is tried again later.
      state.tokenDown = true;
      throw new Error("unavailable");
    }
    state.tokenDown = false;
    if (!response.ok) throw new Error("token " + response.status);
    return (await response.json()).token;
  }

  const socket = io("/meeting", {
    // Called before every connection attempt: a token lives two minutes.
    auth: (callback) => {
      roomToken().then(
        (token) => callback({ token }),
        () => callback({ token: "" }),
      );
    },
    reconnection: true,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 10000,
    transports: ["websocket", "polling"],
    tryAllTransports: true,
  });

  // A video meeting's camera, microphone and the others' video (room-video.js).
  const video =
    data.mode === "video" && typeof window.ConciliaVideo === "function"
      ? window.ConciliaVideo({
          data,
          T,
          socket,
          call,
          refusal,
          fmt,
          el,
          show,
          announce,
          roomToken,
          connected: () => socket.connected,
          participants: () => state.participants,
          renderParticipants: () => renderParticipants(),
          excluded: () => Boolean(excluded()),
        })
      : null;

  function setConnection(text) {
    show("connection", text);
  }

  function fatal(text) {
    state.over = true;
    if (video) video.stop();
    const box = $("room-error");
    box.textContent = text;
    box.hidden = false;
    $("lobby").hidden = true;
    $("inside").hidden = true;
    setConnection("");
    socket.disconnect();
  }

  socket.on("connect", () => {
    state.tokenRetries = 0;
    state.unavailable = 0;
    $("room-error").hidden = true;
    setConnection(T.connected);
    join(state.full ? { after: state.syncedSeq } : {});
  });

  // A node whose Redis came back: events of other nodes may have been lost meanwhile, so ask
  // again for what follows the last gap-free seq (and, in the lobby, for the lobby's state: an
  // admission may have been among them). A party turned away knocks again only by its button.
  // Several resyncs while one is answered (other nodes may send a few) make one more join.
  let resyncing = false;
  let resyncAgain = false;
  socket.on("resync", async () => {
    if (state.over || !socket.connected) return;
    if (resyncing) {
      resyncAgain = true;
      return;
    }
    resyncing = true;
    try {
      do {
        resyncAgain = false;
        if (state.full) await join({ after: state.syncedSeq });
        else if (state.me && state.me.state === "waiting") await join({});
      } while (resyncAgain && !state.over && socket.connected);
    } finally {
      resyncing = false;
    }
  });

  socket.on("connect_error", (error) => {
    const code = (error && error.data && error.data.code) || (error && error.message);
    if (socket.active) {
      // A transport failure: the client tries again by itself, with a new token.
      setConnection(T.reconnecting);
      return;
    }
    if (code === "unavailable" || state.tokenDown) {
      // The service is down for a moment (database, Redis): try again, backing off to 10 s.
      state.unavailable += 1;
      setConnection(T.reconnecting);
      const wait = Math.min(1000 * 2 ** Math.min(state.unavailable, 4), 10000);
      window.setTimeout(() => {
        if (!state.over && !socket.connected) socket.connect();
      }, wait);
      return;
    }
    if (state.signedOut || code === "unauthenticated") {
      fatal(T.signed_out);
    } else if (code === "token_invalid" && state.tokenRetries < 3) {
      state.tokenRetries += 1; // a token that expired on the way: fetch another
      setConnection(T.reconnecting);
      window.setTimeout(() => socket.connect(), 1000 * state.tokenRetries);
    } else if (code === "not_found") {
      fatal(T.not_participant);
    } else if (code === "room_closed" && state.room && state.room.ended) {
      showEnded();
    } else {
      fatal(errorText({ code }));
    }
  });

  socket.on("disconnect", (reason) => {
    state.joining = 0;
    state.early = [];
    if (video) video.disconnected();
    if (state.over) return;
    setConnection(T.reconnecting);
    if (reason === "io server disconnect") {
      // The server closed it (access lost, say): a new attempt tells why, or gets back in.
      window.setTimeout(() => {
        if (!state.over) socket.connect();
      }, 2000);
    }
  });

  function call(event, payload, timeout = 10000) {
    return new Promise((resolve) => {
      if (!socket.connected) {
        resolve({ ok: false, error: { code: "offline" } });
        return;
      }
      socket.timeout(timeout).emit(event, payload, (error, answer) => {
        resolve(error ? { ok: false, error: { code: "offline" } } : answer);
      });
    });
  }

  function refusal(answer) {
    if (answer.error && answer.error.code === "offline") return T.not_sent;
    return errorText(answer.error);
  }

  async function join(payload) {
    state.joining += 1;
    const answer = await call("join", payload);
    state.joining = Math.max(0, state.joining - 1);
    if (answer.ok) {
      $("room-error").hidden = true;
      applySnapshot(answer.snapshot, payload.after !== undefined);
    } else {
      refusedJoin(answer, payload);
    }
    if (state.joining === 0 && !state.over) {
      const waiting = state.early;
      state.early = [];
      for (const [event, body] of waiting) apply(event, body);
    }
  }

  function refusedJoin(answer, payload) {
    const code = answer.error && answer.error.code;
    if (code === "removed") {
      removedMe();
    } else if (code === "room_closed") {
      if (state.room && state.room.ended) showEnded();
      else fatal(errorText(answer.error));
    } else if (code === "offline" || code === "unavailable") {
      // No answer in time, or the database or Redis is down for a moment: say so, and ask
      // again while connected (a reconnection joins by itself).
      let wait = 2000;
      if (code === "unavailable") {
        show("room-error", errorText(answer.error));
        $("room-error").hidden = false;
        const after = Number((answer.error.params || {}).retry_after);
        wait = 1000 * Math.min(30, after > 0 ? after : 5);
      }
      window.setTimeout(() => {
        if (socket.connected && !state.over) join(payload);
      }, wait);
    } else {
      show("room-error", errorText(answer.error));
      $("room-error").hidden = false;
    }
  }

  for (const event of ["message", "participant", "room", "me", "typing", "agreement"]) {
    socket.on(event, (body) => {
      if (state.joining > 0) state.early.push([event, body]);
      else apply(event, body);
    });
  }

  // ---- applying what the server says ---------------------------------------------------------

  function applySnapshot(snapshot, resumed) {
    state.meeting = snapshot.meeting;
    state.offset = Date.parse(snapshot.server_time) - Date.now();
    state.me = snapshot.me;
    state.room = snapshot.room;
    if (snapshot.me.state === "admitted") {
      if (!resumed) {
        state.messages.clear();
        state.lastSeq = 0;
        state.syncedSeq = 0;
        $("messages").replaceChildren();
      }
      state.participants.clear();
      for (const one of snapshot.participants) state.participants.set(one.id, one);
      for (const message of snapshot.messages) addMessage(message);
      state.agreement = snapshot.agreement;
      state.full = true;
      if (resumed && snapshot.messages.length >= PAGE) {
        // The first PAGE of what was missed: page on with `history` from the last of them.
        const last = snapshot.messages[snapshot.messages.length - 1].seq;
        state.syncedSeq = Math.max(state.syncedSeq, last);
        catchUp(snapshot.seq);
      } else {
        // Every message up to the room's seq that the account may read is held (a first
        // join shows the latest ones only, on purpose): gaps left by a separate session the
        // account may not read no longer hold the next resync back.
        state.syncedSeq = Math.max(state.syncedSeq, snapshot.seq);
      }
    } else {
      state.full = false;
      if (video) video.stop();
    }
    render();
    if (video && state.full && !state.over) video.admitted(snapshot);
  }

  // Pages of missed messages after a long absence, until one holds fewer than asked; a
  // failure leaves syncedSeq where the pages got to, and the next rejoin goes on from there.
  async function catchUp(upTo) {
    for (;;) {
      const answer = await call("history", { after: state.syncedSeq, limit: PAGE });
      if (!answer.ok || state.over) return;
      for (const message of answer.messages) {
        addMessage(message);
        state.syncedSeq = Math.max(state.syncedSeq, message.seq);
      }
      if (answer.messages.length < PAGE) {
        state.syncedSeq = Math.max(state.syncedSeq, upTo);
        return;
      }
    }
  }

  function apply(event, body) {
    if (event === "message") {
      if (state.full) addMessage(body);
      return;
    }
    if (event === "participant") {
      const before = state.participants.get(body.id);
      if (!chairing && body.state !== "admitted" && body.side !== "conciliator") {
        state.participants.delete(body.id);
      } else {
        state.participants.set(body.id, body);
      }
      if (chairing && body.state === "waiting" && (!before || before.state !== "waiting")) {
        announce(fmt(T.someone_waiting, { name: body.name }));
      }
      renderParticipants();
      renderAgreement();
      if (video) video.update();
      return;
    }
    if (event === "room") {
      state.room = body;
      render();
      if (video) video.update();
      return;
    }
    if (event === "me") {
      const was = state.me ? state.me.state : null;
      state.me = Object.assign({}, state.me || {}, body);
      if (body.state === "removed") return removedMe();
      if (body.state === "admitted" && was !== "admitted") {
        join({}); // admitted: the full snapshot comes with a new join
        return;
      }
      if (body.state === "turned_away") state.full = false;
      render();
      return;
    }
    if (event === "typing") {
      showTyping(body);
      return;
    }
    if (event === "agreement") {
      const changed = state.agreement && state.agreement.version !== body.version;
      state.agreement = body;
      renderAgreement();
      if (changed && !chairing) {
        announce(fmt(T.agreement_changed_live, { version: body.version }));
        $("accept-code").value = "";
        show("send-code-status", "");
      }
    }
  }

  function removedMe() {
    state.over = true;
    fatal(T.removed);
  }

  // ---- rendering ---------------------------------------------------------------------------------

  function render() {
    const me = state.me;
    if (!me) return;
    if (state.room && state.room.ended) return showEnded();
    const inside = me.state === "admitted" && state.full;
    $("inside").hidden = !inside;
    $("lobby").hidden = inside;
    if (!inside) {
      renderLobby();
      return;
    }
    renderBanner();
    renderParticipants();
    renderAgreement();
    renderDocuments();
    renderComposer();
  }

  function renderLobby() {
    const me = state.me;
    const room = state.room || {};
    const turned = me.state === "turned_away";
    $("lobby-waiting").hidden = turned;
    show("lobby-waiting", room.opened ? T.waiting : T.waiting_unopened);
    $("lobby-turned").hidden = !turned;
    $("ask-again").hidden = !turned;
    show("lobby-turned-text", T.turned_away);
    const note = turned ? me.note || "" : "";
    $("lobby-turned-note").hidden = !note;
    show("lobby-turned-note", note);
    $("lobby-note").hidden = !room.lobby_note;
    show("lobby-note-text", room.lobby_note || "");
  }

  function showEnded() {
    state.over = true;
    if (video) video.stop();
    const outcome = state.room && state.room.outcome;
    show("ended-text", fmt(T.ended, { outcome: data.outcomes[outcome] || outcome || "" }));
    show("ended-minutes", T.ended_minutes);
    $("ended").hidden = false;
    $("lobby").hidden = true;
    $("inside").hidden = true;
    $("time-warning").hidden = true;
    setConnection("");
    if (socket.connected) socket.disconnect();
  }

  function renderBanner() {
    const banner = $("session-banner");
    const session = state.room && state.room.session;
    if (!session || session.kind !== "separate") {
      banner.hidden = true;
      banner.textContent = "";
      banner.className = "alert alert-info";
    } else if (chairing) {
      banner.hidden = false;
      banner.className = "alert alert-info";
      banner.textContent = T["banner_chair_" + session.side];
    } else if (session.side === data.side) {
      banner.hidden = false;
      banner.className = "alert alert-info";
      banner.textContent = T.banner_mine;
    } else {
      banner.hidden = false;
      banner.className = "alert alert-warning";
      banner.textContent = T.banner_excluded;
    }
    if (chairing) {
      const current = session && session.kind === "separate" ? session.side : "";
      for (const button of document.querySelectorAll("[data-separate]")) {
        const on = button.dataset.separate === current;
        button.setAttribute("aria-pressed", String(on));
        button.disabled = on;
      }
    }
  }

  function excluded() {
    const session = state.room && state.room.session;
    return !chairing && session && session.kind === "separate" && session.side !== data.side;
  }

  function renderComposer() {
    const blocked = excluded() || (state.me && state.me.muted);
    $("say-send").disabled = Boolean(blocked);
    $("say-text").readOnly = Boolean(blocked);
    if (blocked) show("say-error", errorText({ code: excluded() ? "separate_session" : "muted" }));
    else if ($("say-error").dataset.kind === "state") show("say-error", "");
    $("say-error").dataset.kind = blocked ? "state" : "";
  }

  // The chat: messages in sequence order, each added once.
  function addMessage(message) {
    if (state.messages.has(message.seq)) return;
    state.messages.set(message.seq, message);
    state.lastSeq = Math.max(state.lastSeq, message.seq);
    while (state.messages.has(state.syncedSeq + 1)) state.syncedSeq += 1;
    const log = $("messages");
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    const item = messageItem(message);
    let after = null;
    for (const child of log.children) {
      if (Number(child.dataset.seq) > message.seq) {
        after = child;
        break;
      }
    }
    log.insertBefore(item, after);
    if (message.kind === "document") renderDocuments();
    if (message.author && message.kind === "chat") showTyping({ id: message.author, on: false });
    if (nearBottom || message.author === data.me) log.scrollTop = log.scrollHeight;
  }

  function messageItem(message) {
    const classes = ["chat-message", "chat-" + message.kind];
    if (message.author === data.me && message.kind !== "notice") classes.push("chat-mine");
    if (message.side) classes.push("chat-separate");
    const item = el("li", { className: classes.join(" "), "data-seq": message.seq });
    const when = el("time", { datetime: message.at }, clockFormat.format(new Date(message.at)));
    if (message.kind === "notice") {
      const line = el("p", { className: "mb-0" });
      line.append(when, " ", noticeText(message));
      item.append(line);
      return item;
    }
    const meta = el("p", { className: "chat-meta mb-0" });
    const author = state.participants.get(message.author);
    meta.append(el("span", { className: "fw-semibold" }, message.author_name));
    if (author) meta.append(" ", el("span", { className: "chat-side" }, "(" + sideLabel(author.side) + ")"));
    meta.append(" ", when);
    if (message.side) meta.append(" ", el("span", { className: "badge chat-badge" }, T.separate_tag));
    item.append(meta);
    if (message.kind === "document") {
      const line = el("p", { className: "mb-0" }, T.shared + " ");
      line.append(el("a", { href: "/documents/" + message.document }, message.text));
      item.append(line);
    } else {
      item.append(el("p", { className: "message-body mb-0" }, message.text));
    }
    return item;
  }

  function noticeText(message) {
    const template = T["notice_" + message.text];
    return template ? fmt(template, { name: message.author_name }) : message.text;
  }

  // Who is writing now (an indicator that fades if no news comes).
  function showTyping(body) {
    if (body.id === data.me) return;
    const old = state.typing.get(body.id);
    if (old) window.clearTimeout(old);
    if (body.on) {
      state.typing.set(
        body.id,
        window.setTimeout(() => showTyping({ id: body.id, on: false }), 6000),
      );
    } else {
      state.typing.delete(body.id);
    }
    const names = [...state.typing.keys()]
      .map((id) => (state.participants.get(id) || {}).name)
      .filter(Boolean);
    show(
      "typing",
      names.length === 0
        ? ""
        : names.length === 1
          ? fmt(T.typing_one, { name: names[0] })
          : fmt(T.typing_many, { names: names.join(", ") }),
    );
  }

  // Participants, kept in place so that keyboard focus survives updates.
  function renderParticipants() {
    const list = $("participants");
    const seen = new Set();
    const people = [...state.participants.values()].sort((a, b) => order(a) - order(b));
    for (const person of people) {
      seen.add(person.id);
      let row = list.querySelector(`li[data-id="${CSS.escape(person.id)}"]`);
      const signature = JSON.stringify(person) + (video && video.mutedAudio(person.id) ? " audio-muted" : "");
      if (!row) {
        row = el("li", { className: "participant", "data-id": person.id });
        list.append(row);
      } else if (row.dataset.signature === signature) {
        continue;
      }
      const focused = row.contains(document.activeElement) ? document.activeElement : null;
      const focusAction = focused ? focused.dataset.action : null;
      const note = row.querySelector("input");
      const kept = note ? note.value : "";
      row.dataset.signature = signature;
      row.replaceChildren(...participantRow(person, kept));
      if (focusAction) {
        const again = row.querySelector(`[data-action="${focusAction}"]`) || row.querySelector("button");
        if (again) again.focus();
      }
    }
    for (const row of [...list.children]) {
      if (!seen.has(row.dataset.id)) row.remove();
    }
    const rows = [...list.children];
    const sorted = [...rows].sort((a, b) => rank(a) - rank(b));
    // Moving a row would take the keyboard focus away from it: only when the order changed.
    if (sorted.some((row, i) => row !== rows[i])) list.append(...sorted);
  }

  function order(person) {
    return { conciliator: 0, applicant: 1, company: 2 }[person.side] ?? 3;
  }

  function rank(row) {
    const person = state.participants.get(row.dataset.id);
    return person ? order(person) : 9;
  }

  function participantRow(person, keptNote) {
    const parts = [];
    const head = el("p", { className: "mb-1" });
    const dot = el("span", {
      className: "presence " + (person.online ? "presence-on" : "presence-off"),
      "aria-hidden": "true",
    });
    head.append(dot, " ", el("span", { className: "fw-semibold" }, person.name));
    if (person.id === data.me) head.append(" ", T.you);
    const facts = [sideLabel(person.side), person.online ? T.online : T.offline];
    if (person.state !== "admitted") facts.push(T["state_" + person.state] || person.state);
    if (person.muted) facts.push(T.muted);
    if (video && video.mutedAudio(person.id)) facts.push(T.muted_by_conciliator);
    if (person.asked_proposal) facts.push(T.asked_proposal);
    if (person.accepted_version) facts.push(fmt(T.accepted_version, { version: person.accepted_version }));
    head.append(el("span", { className: "small d-block" }, facts.join(" · ")));
    parts.push(head);
    if (!chairing || person.side === "conciliator") return parts;
    const actions = el("div", {
      className: "d-flex flex-wrap gap-2 mb-2",
      role: "group",
      "aria-label": fmt(T.actions_for, { name: person.name }),
    });
    if (person.state === "waiting") {
      const noteId = "note-" + person.id;
      const label = el("label", { for: noteId, className: "form-label small mb-0 w-100" }, fmt(T.turn_away_note, { name: person.name }));
      const input = el("input", { id: noteId, type: "text", className: "form-control form-control-sm", maxlength: 300 });
      input.value = keptNote;
      parts.push(label, input);
      actions.append(button(T.admit, "admit", person, "btn-success"));
      actions.append(button(T.turn_away, "turn_away", person, "btn-outline-danger"));
    } else if (person.state === "admitted") {
      actions.append(button(person.muted ? T.unmute : T.mute, "mute", person, "btn-outline-primary"));
      if (video) {
        const cut = video.mutedAudio(person.id);
        actions.append(button(cut ? T.media_unmute : T.media_mute, "media_mute", person, "btn-outline-primary"));
      }
      actions.append(button(T.remove, "remove", person, "btn-outline-danger"));
    }
    if (actions.children.length) parts.push(actions);
    return parts;
  }

  function button(text, action, person, style) {
    return el("button", {
      type: "button",
      className: "btn btn-sm " + style,
      "data-action": action,
      "data-account": person.id,
    }, text);
  }

  // Documents: the ones shared in the room (from the chat), and the picker of the case file's.
  function renderDocuments() {
    const shared = $("shared-documents");
    const items = [];
    const seen = new Set();
    for (const message of [...state.messages.values()].sort((a, b) => a.seq - b.seq)) {
      if (message.kind !== "document" || seen.has(message.document)) continue;
      seen.add(message.document);
      const item = el("li");
      item.append(el("a", { href: "/documents/" + message.document }, message.text));
      items.push(item);
    }
    if (!items.length) items.push(el("li", { className: "small" }, T.no_shared));
    shared.replaceChildren(...items);
    renderPicker();
  }

  function renderPicker() {
    const select = $("share-select");
    const chosen = select.value;
    const options = state.documents.map((doc) => {
      let label = doc.name + " — " + doc.category;
      if (doc.description) label += ": " + doc.description;
      if (!doc.visible) label += " (" + T.private_document + ")";
      return el("option", { value: doc.id }, label);
    });
    if (!options.length) options.push(el("option", { value: "" }, T.no_documents));
    select.replaceChildren(...options);
    if (chosen && state.documents.some((doc) => doc.id === chosen)) select.value = chosen;
  }

  // The agreement: its text and version for everyone; acceptance for the parties.
  function renderAgreement() {
    const agreement = state.agreement;
    const has = Boolean(agreement && agreement.text);
    show(
      "agreement-heading",
      has
        ? (agreement.proposal ? T.agreement_proposal : T.agreement_draft) +
            " — " + fmt(T.agreement_version, { version: agreement.version })
        : T.no_agreement,
    );
    show("agreement-text", has ? agreement.text : "");
    if (chairing) {
      // The text the parties see fills the editor, unless the conciliator is changing it.
      const area = $("draft-text");
      const typed = area.value.trim();
      if (has && (typed === "" || typed === (area.dataset.shown || ""))) area.value = agreement.text;
      if (has) area.dataset.shown = agreement.text;
      return;
    }
    const me = state.participants.get(data.me);
    const accepted = me && has && me.accepted_version === agreement.version;
    $("accept-box").hidden = !has || accepted;
    show("accept-status", accepted ? fmt(T.you_accepted, { version: agreement.version }) : "");
    const asked = me && me.asked_proposal;
    $("ask-proposal").disabled = Boolean(asked);
    show("ask-proposal-status", asked ? T.you_asked : "");
  }

  // ---- the countdown ------------------------------------------------------------------------------

  function clock(ms) {
    const total = Math.max(0, Math.floor(ms / 1000));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = total % 60;
    const two = (n) => String(n).padStart(2, "0");
    return (hours ? hours + ":" + two(minutes) : String(minutes)) + ":" + two(seconds);
  }

  function tick() {
    const now = Date.now() + state.offset;
    const starts = Date.parse(state.meeting.starts_at);
    const ends = Date.parse(state.meeting.ends_at);
    const countdown = $("countdown");
    if (state.room && state.room.ended) {
      countdown.textContent = "";
      return;
    }
    if (now < starts) {
      countdown.textContent = fmt(T.starts_in, { time: clock(starts - now) });
    } else if (now < ends) {
      countdown.textContent = fmt(T.time_left, { time: clock(ends - now) });
    } else {
      countdown.textContent = T.time_over;
    }
    const warnAt = ends - data.warn_minutes * 60000;
    countdown.classList.toggle("countdown-late", now >= warnAt);
    if (!state.warned && now >= warnAt && now < ends) {
      state.warned = true; // once: a warning, nobody is cut off
      const warning = $("time-warning");
      warning.textContent = fmt(T.time_warning, { minutes: data.warn_minutes });
      warning.hidden = false;
    }
  }

  tick();
  window.setInterval(tick, 1000);
  setConnection(T.connecting);

  // ---- what people do -------------------------------------------------------------------------------

  let pending = null; // the message being sent: a resend keeps its client_id (stored once)
  let typingSent = 0;
  let typingTimer = null;

  function clientId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  async function say() {
    const area = $("say-text");
    const text = area.value.trim();
    if (!text) {
      show("say-error", errorText({ code: "required" }));
      return;
    }
    if (!pending || pending.text !== text) pending = { text, client_id: clientId() };
    $("say-send").disabled = true;
    const answer = await call("say", { client_id: pending.client_id, text });
    $("say-send").disabled = false;
    if (answer.ok) {
      pending = null;
      area.value = "";
      show("say-error", "");
      stopTyping();
    } else {
      show("say-error", refusal(answer));
    }
    renderComposer();
    area.focus();
  }

  function stopTyping() {
    if (typingTimer) window.clearTimeout(typingTimer);
    typingTimer = null;
    if (typingSent) {
      typingSent = 0;
      call("typing", { on: false });
    }
  }

  $("say-form").addEventListener("submit", (event) => {
    event.preventDefault();
    say();
  });

  $("say-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      say();
    }
  });

  $("say-text").addEventListener("input", () => {
    if (excluded() || (state.me && state.me.muted) || !socket.connected) return;
    const now = Date.now();
    if (now - typingSent > 3000) {
      typingSent = now;
      call("typing", { on: true });
    }
    if (typingTimer) window.clearTimeout(typingTimer);
    typingTimer = window.setTimeout(stopTyping, 4000);
  });

  $("ask-again").addEventListener("click", async () => {
    show("ask-again-error", "");
    await join({});
  });

  // The conciliator's controls on participants.
  $("participants").addEventListener("click", async (event) => {
    const target = event.target.closest("button[data-action]");
    if (!target) return;
    const person = state.participants.get(target.dataset.account);
    if (!person) return;
    const action = target.dataset.action;
    let answer;
    if (action === "admit") {
      answer = await call("admit", { account: person.id });
    } else if (action === "turn_away") {
      if (!window.confirm(fmt(T.confirm_turn_away, { name: person.name }))) return;
      const note = $("note-" + person.id);
      answer = await call("turn_away", { account: person.id, note: note ? note.value.trim() : "" });
    } else if (action === "mute") {
      answer = await call("mute", { account: person.id, muted: !person.muted });
    } else if (action === "media_mute" && video) {
      answer = await video.toggleMute(person);
    } else if (action === "remove") {
      if (!window.confirm(fmt(T.confirm_remove, { name: person.name }))) return;
      answer = await call("remove", { account: person.id });
    } else {
      return;
    }
    show("participants-error", answer.ok ? "" : refusal(answer));
  });

  if (chairing) {
    for (const choice of document.querySelectorAll("[data-separate]")) {
      choice.addEventListener("click", async () => {
        const side = choice.dataset.separate || null;
        const answer = await call("separate", { side });
        show("sessions-error", answer.ok ? "" : refusal(answer));
      });
    }
    $("lobby-note-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const answer = await call("lobby_note", { note: $("lobby-note-input").value.trim() });
      show("lobby-note-error", answer.ok ? "" : refusal(answer));
      show("lobby-note-status", answer.ok ? T.lobby_note_saved : "");
    });
    $("draft-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = $("draft-text").value.trim();
      if (!text) {
        show("draft-error", errorText({ code: "no_agreement_text" }));
        return;
      }
      const answer = await call("draft", { text, proposal: $("draft-proposal").checked });
      show("draft-error", answer.ok ? "" : refusal(answer));
      show("draft-status", answer.ok ? fmt(T.draft_saved, { version: answer.version }) : "");
      if (answer.ok) $("draft-text").dataset.shown = text;
    });
    $("close-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const outcome = $("close-outcome").value;
      if (!outcome) {
        show("close-error", errorText({ code: "required" }));
        return;
      }
      if (!window.confirm(fmt(T.confirm_close, { outcome: data.outcomes[outcome] }))) return;
      const answer = await call("close", { outcome, note: $("close-note").value.trim() });
      show("close-error", answer.ok ? "" : refusal(answer));
    });
  } else {
    $("ask-proposal").addEventListener("click", async () => {
      const answer = await call("ask_proposal", {});
      show("ask-proposal-error", answer.ok ? "" : refusal(answer));
    });
    $("send-code").addEventListener("click", async () => {
      const answer = await call("send_code", {});
      show("send-code-error", answer.ok ? "" : refusal(answer));
      show("send-code-status", answer.ok ? fmt(T.code_sent, { address: answer.sent_to }) : "");
      if (answer.ok) $("accept-code").focus();
    });
    $("accept-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const code = $("accept-code").value.replace(/\s+/g, "");
      if (!/^[0-9]{6}$/.test(code)) {
        show("accept-error", errorText({ code: "code_invalid" }));
        return;
      }
      // The version the party was shown: a newer text voids this acceptance on the server.
      const version = state.agreement ? state.agreement.version : 0;
      const answer = await call("accept", { code, version });
      show("accept-error", answer.ok ? "" : refusal(answer));
      if (answer.ok) $("accept-code").value = "";
    });
  }

  // Sharing a document of the case file, and uploading one first.
  $("share-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = $("share-select").value;
    if (!id) {
      show("share-error", errorText({ code: "required" }));
      return;
    }
    const answer = await share(id);
    show("share-error", answer.ok ? "" : refusal(answer));
    if (answer.ok) announce(T.shared_done);
  });

  // A share sent again (its answer was lost) keeps its client_id: shared once.
  let pendingShare = null;
  async function share(documentId) {
    if (!pendingShare || pendingShare.document !== documentId) {
      pendingShare = { document: documentId, client_id: clientId() };
    }
    const answer = await call("share", pendingShare);
    if (answer.ok) pendingShare = null;
    return answer;
  }

  // The case file may have gained documents since the page was drawn: look again when the
  // picker is used (at most every ten seconds).
  let documentsAt = Date.now();
  async function refreshDocuments(always = false) {
    if (!always && Date.now() - documentsAt < 10000) return;
    documentsAt = Date.now();
    const response = await fetch(data.urls.documents, {
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) return;
    const found = (await response.json()).documents;
    const ids = (list) => list.map((doc) => doc.id).join(",");
    if (ids(found) === ids(state.documents)) return;
    state.documents = found;
    renderPicker();
  }

  $("share-select").addEventListener("focus", () => {
    refreshDocuments().catch(() => {});
  });

  // A meeting outlasts the portal's idle time-out (30 minutes) while only the socket talks:
  // every five minutes the page asks for the case documents, which keeps the session alive (a
  // reconnection needs it for its room token) and refreshes the picker.
  window.setInterval(() => {
    if (!state.over) refreshDocuments(true).catch(() => {});
  }, 5 * 60000);

  const upload = $("upload-form");
  if (upload) {
    // Another file is another upload: its own key (a resend of the same keeps it).
    upload.elements.file.addEventListener("change", () => {
      upload.elements.upload_key.value = clientId().replace(/[^A-Za-z0-9_-]/g, "");
    });
    upload.addEventListener("submit", async (event) => {
      event.preventDefault();
      show("upload-error", "");
      if (!upload.reportValidity()) return;
      show("upload-status", T.uploading);
      const known = new Set(state.documents.map((doc) => doc.id));
      let response;
      try {
        // The case file's own upload; it answers with a redirect to this meeting's documents.
        response = await fetch(data.urls.upload, {
          method: "POST",
          body: new FormData(upload),
          credentials: "same-origin",
        });
      } catch {
        show("upload-status", "");
        show("upload-error", T.not_sent);
        return;
      }
      show("upload-status", "");
      const type = response.headers.get("Content-Type") || "";
      if (!response.ok || !type.startsWith("application/json")) {
        show("upload-error", await uploadRefusal(response));
        return;
      }
      state.documents = (await response.json()).documents;
      documentsAt = Date.now();
      renderPicker();
      // Stored: the next upload is another one. (Until now a retry kept the form's key, so
      // an upload whose answer was lost is not stored twice.)
      upload.elements.upload_key.value = clientId().replace(/[^A-Za-z0-9_-]/g, "");
      const added = state.documents.filter((doc) => doc.mine && !known.has(doc.id)).pop();
      if (!added) return;
      upload.reset();
      $("share-select").value = added.id;
      const answer = await share(added.id);
      show("upload-error", answer.ok ? "" : refusal(answer));
      show("upload-status", answer.ok ? T.uploaded : "");
    });
  }

  // A refused upload comes back as the service's error page: read its code (never its HTML).
  async function uploadRefusal(response) {
    if (response.redirected && new URL(response.url).pathname === "/login") return T.signed_out;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const found = page.querySelector("[data-error-code]");
    return errorText({ code: found ? found.getAttribute("data-error-code") : "bad_request" });
  }

  renderPicker();
})();
