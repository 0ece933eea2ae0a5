// The meeting room's video (docs/protocol.md, "Video"): one RTCPeerConnection to the server,
// which forwards the others' audio and video and decides who receives whom.
//
// room.js calls `window.ConciliaVideo(api)` on a video meeting's page and drives what it gets
// back: `admitted(snapshot, resumed)` after each admitted snapshot, `update()` when the room or
// its participants change, `stop()` when the participant leaves the room for good, `mutedAudio(id)`
// and `muteButton(person)` for the conciliator's controls. The chat never depends on any of this:
// when the camera, the microphone or the connection fails, the page says so and the participant
// goes on by chat.
//
// The offer: our own audio and video (`sendonly`, a transceiver even with no device, so a camera
// turned on later needs no new negotiation), then one `recvonly` audio and video pair per slot,
// all bundled. The server answers in the ack, and says in `media_layout` which participant each
// slot carries (by MID) and whether their audio and video flow.
"use strict";

window.ConciliaVideo = (api) => {
  const { data, T, call, fmt, el, show, announce } = api;
  const $ = (id) => document.getElementById(id);
  const section = $("video");
  if (!section || typeof RTCPeerConnection !== "function") {
    if (section) {
      section.hidden = false;
      show("video-status", T.video_unsupported);
      for (const id of ["video-start", "audio-start"]) $(id).disabled = true;
    }
    return null;
  }
  const MAX_SLOTS = 8;
  const RETRIES = [2000, 5000, 10000]; // automatic new offers after a failure, then a button

  const v = {
    wanted: false, // the participant turned video on (and has not left it)
    pc: null,
    generation: 0, // which connection the events belong to
    local: null, // MediaStream of our own camera and microphone
    audioTx: null,
    videoTx: null,
    micOn: false,
    cameraOn: false,
    tracks: new Map(), // mid -> received MediaStreamTrack
    layout: { slots: [], unplaced: [] },
    slots: 0,
    muted: new Set(), // parties whose audio the conciliator cut
    retries: 0,
    retryTimer: null,
    elsewhere: null, // the socket to the node hosting the meeting's media, if not ours
    iceServers: (data.media && data.media.ice_servers) || [],
    state: "off",
    stale: false, // the room's connection dropped: the next admitted snapshot offers again
    offering: false, // an offer is on its way: connection events until its answer are stale
  };

  // ---- talking to the server (or to the node hosting the media) ------------------------------

  function mediaCall(event, payload) {
    if (v.elsewhere) return v.elsewhere.call(event, payload);
    return call(event, payload);
  }

  // The meeting's media is hosted by another node: a second /meeting connection to it carries
  // the media events (the chat stays on this one).
  function connectElsewhere(url) {
    return new Promise((resolve) => {
      let target;
      try {
        target = new URL(url, window.location.href);
      } catch {
        resolve(false);
        return;
      }
      const prefix = target.pathname.replace(/\/+$/, "");
      const socket = io(target.origin + "/meeting", {
        path: prefix + "/socket.io/",
        auth: (callback) => {
          api.roomToken().then(
            (token) => callback({ token }),
            () => callback({ token: "" }),
          );
        },
        transports: ["websocket", "polling"],
        reconnection: true,
      });
      const remote = {
        socket,
        call: (event, payload) =>
          new Promise((done) => {
            if (!socket.connected) {
              done({ ok: false, error: { code: "offline" } });
              return;
            }
            socket.timeout(10000).emit(event, payload, (error, answer) => {
              done(error ? { ok: false, error: { code: "offline" } } : answer);
            });
          }),
      };
      for (const event of ["media_layout", "media_connection", "media_muted"]) {
        socket.on(event, (body) => handlers[event](body));
      }
      socket.once("connect", async () => {
        const joined = await remote.call("join", {});
        resolve(joined.ok ? remote : false);
      });
      socket.once("connect_error", () => {
        socket.disconnect();
        resolve(false);
      });
    }).then((remote) => {
      v.elsewhere = remote || null;
      return Boolean(remote);
    });
  }

  // ---- devices ---------------------------------------------------------------------------------

  function deviceError(error) {
    const name = (error && error.name) || "";
    if (name === "NotAllowedError" || name === "SecurityError") return T.media_denied;
    if (name === "NotFoundError" || name === "OverconstrainedError") return T.media_missing;
    if (name === "NotReadableError" || name === "AbortError") return T.media_busy;
    return fmt(T.media_failed, { reason: name || String(error) });
  }

  async function devices(withCamera) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return { stream: new MediaStream(), problem: T.media_unavailable };
    }
    const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } };
    try {
      return { stream: await navigator.mediaDevices.getUserMedia({ audio: true, video: withCamera ? video : false }), problem: "" };
    } catch (error) {
      if (!withCamera) return { stream: new MediaStream(), problem: deviceError(error) };
      // No camera (or not allowed): the microphone alone, if that works.
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        return { stream, problem: deviceError(error) };
      } catch {
        return { stream: new MediaStream(), problem: deviceError(error) };
      }
    }
  }

  function ownPreview() {
    const preview = $("own-video");
    const track = v.local && v.local.getVideoTracks()[0];
    if (track && v.cameraOn) {
      preview.srcObject = new MediaStream([track]);
      preview.play().catch(() => {});
    } else {
      preview.srcObject = null;
    }
    $("own-tile").classList.toggle("video-off", !(track && v.cameraOn));
    show("own-state", [v.cameraOn ? "" : T.camera_is_off, v.micOn ? "" : T.mic_is_off].filter(Boolean).join(" · "));
  }

  function releaseDevices() {
    if (v.local) for (const track of v.local.getTracks()) track.stop();
    v.local = null;
    v.micOn = false;
    v.cameraOn = false;
  }

  // ---- the peer connection ---------------------------------------------------------------------

  function othersAdmitted() {
    let count = 0;
    for (const person of api.participants().values()) {
      if (person.id !== data.me && person.state === "admitted") count += 1;
    }
    return count;
  }

  function dropConnection() {
    v.generation += 1;
    v.offering = false;
    if (v.pc) {
      v.pc.onicecandidate = null;
      v.pc.ontrack = null;
      v.pc.onconnectionstatechange = null;
      v.pc.close();
    }
    v.pc = null;
    v.tracks.clear();
    if (v.retryTimer) window.clearTimeout(v.retryTimer);
    v.retryTimer = null;
  }

  async function connect() {
    dropConnection();
    const generation = v.generation;
    v.slots = Math.min(MAX_SLOTS, Math.max(2, othersAdmitted(), v.layout.slots.filter((s) => s.participant).length + v.layout.unplaced.length));
    setState("connecting");
    const pc = new RTCPeerConnection({ iceServers: v.iceServers, bundlePolicy: "max-bundle" });
    v.pc = pc;
    const audio = v.local && v.local.getAudioTracks()[0];
    const video = v.local && v.local.getVideoTracks()[0];
    v.audioTx = pc.addTransceiver(audio || "audio", { direction: "sendonly" });
    v.videoTx = pc.addTransceiver(v.cameraOn && video ? video : "video", { direction: "sendonly" });
    for (let i = 0; i < v.slots; i += 1) {
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    pc.ontrack = (event) => {
      if (generation !== v.generation) return;
      v.tracks.set(event.transceiver.mid, event.track);
      renderTiles();
    };
    pc.onicecandidate = (event) => {
      if (generation !== v.generation) return;
      mediaCall("media_candidate", { candidate: event.candidate ? event.candidate.candidate : null });
    };
    pc.onconnectionstatechange = () => {
      if (generation !== v.generation) return;
      if (pc.connectionState === "connected") {
        v.retries = 0;
        setState("connected");
      } else if (pc.connectionState === "failed") {
        failed();
      }
    };
    let answer;
    v.offering = true; // until its answer, the server's connection events are the old one's
    try {
      await pc.setLocalDescription(await pc.createOffer());
      answer = await mediaCall("media_offer", { sdp: pc.localDescription.sdp });
      if (!answer.ok && answer.error && answer.error.code === "media_elsewhere" && !v.elsewhere) {
        if (await connectElsewhere(answer.error.params && answer.error.params.url)) {
          answer = await mediaCall("media_offer", { sdp: pc.localDescription.sdp });
        }
      }
      if (generation !== v.generation) return;
      v.offering = false;
      if (!answer.ok) {
        failed(answer);
        return;
      }
      if (answer.ice_servers) v.iceServers = answer.ice_servers;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (error) {
      if (generation === v.generation) {
        v.offering = false;
        failed();
      }
      return;
    }
    sendState();
  }

  function sendState() {
    if (!v.pc) return;
    mediaCall("media_state", { audio: v.micOn, video: v.cameraOn }).then((answer) => {
      if (!answer.ok) show("video-error-text", api.refusal(answer));
    });
  }

  // The connection failed (or the server would not answer): the chat goes on; try again a few
  // times by ourselves, then leave it to the participant.
  function failed(answer) {
    const refusedForGood = answer && answer.error && ["forbidden", "removed", "room_closed", "not_admitted"].includes(answer.error.code);
    dropConnection();
    setState("failed", answer && answer.error && answer.error.code !== "offline" ? api.refusal(answer) : "");
    if (!v.wanted || refusedForGood) return;
    const delay = RETRIES[v.retries];
    if (delay === undefined) return;
    v.retries += 1;
    v.retryTimer = window.setTimeout(() => {
      v.retryTimer = null;
      if (v.wanted && api.connected()) connect();
    }, delay);
  }

  function setState(state, detail) {
    v.state = state;
    const status = {
      off: T.video_off,
      connecting: T.video_connecting,
      connected: T.video_connected,
      failed: T.video_failed,
    }[state];
    show("video-status", status);
    const box = $("video-error");
    const text = state === "failed" ? [detail, T.video_failed_chat].filter(Boolean).join(" ") : "";
    box.hidden = !text;
    show("video-error-text", text);
    $("video-retry").hidden = !(state === "failed" && v.wanted && !v.retryTimer);
    if (state === "failed" || state === "connected") announce(status);
    renderControls();
    renderTiles();
  }

  // ---- what the server says --------------------------------------------------------------------

  const handlers = {
    media_layout(layout) {
      v.layout = layout;
      renderTiles();
      // Someone we may see did not fit in our slots: ask for more with a new offer.
      if (v.wanted && layout.unplaced.length && v.slots < MAX_SLOTS && v.state === "connected") connect();
    },
    media_connection(body) {
      if (!v.wanted || !v.pc || v.offering) return;
      if (body.state === "connected") {
        v.retries = 0;
        setState("connected");
      } else if (body.state === "failed" || body.state === "closed") {
        failed(); // the server gave up on our connection: a new one, negotiated by us
      }
    },
    media_muted(body) {
      if (body.muted) v.muted.add(body.account);
      else v.muted.delete(body.account);
      if (body.account === data.me) announce(body.muted ? T.you_are_muted : T.you_are_unmuted);
      renderTiles();
      api.renderParticipants();
    },
  };
  for (const event of Object.keys(handlers)) api.socket.on(event, (body) => handlers[event](body));

  // ---- showing it ------------------------------------------------------------------------------

  function nameOf(id) {
    const person = api.participants().get(id);
    return person ? person.name : "";
  }

  function renderTiles() {
    const grid = $("video-grid");
    const seen = new Set();
    v.layout.slots.forEach((slot, index) => {
      if (!slot.participant || !v.wanted) return;
      const key = "slot-" + index;
      seen.add(key);
      let tile = grid.querySelector(`[data-slot="${key}"]`);
      if (!tile) {
        tile = el("figure", { className: "video-tile", "data-slot": key });
        const player = el("video", { autoplay: true, playsinline: true, className: "video-remote" });
        tile.append(player, el("figcaption", { className: "video-caption" }));
        grid.append(tile);
      }
      tile.dataset.participant = slot.participant;
      const player = tile.querySelector("video");
      const tracks = [v.tracks.get(slot.audio_mid), v.tracks.get(slot.video_mid)].filter(Boolean);
      const current = player.srcObject ? player.srcObject.getTracks() : [];
      if (tracks.length !== current.length || tracks.some((track, i) => track !== current[i])) {
        player.srcObject = tracks.length ? new MediaStream(tracks) : null;
        if (tracks.length) player.play().catch(() => {});
      }
      const name = nameOf(slot.participant);
      player.setAttribute("aria-label", fmt(T.video_of, { name }));
      const facts = [name];
      if (!slot.video) facts.push(T.no_video_now);
      if (v.muted.has(slot.participant)) facts.push(T.muted_by_conciliator);
      else if (!slot.audio) facts.push(T.no_audio_now);
      tile.classList.toggle("video-off", !slot.video);
      tile.querySelector("figcaption").textContent = facts.join(" · ");
    });
    for (const tile of [...grid.querySelectorAll("[data-slot]")]) {
      if (!seen.has(tile.dataset.slot)) {
        const player = tile.querySelector("video");
        player.srcObject = null;
        tile.remove();
      }
    }
    const excluded = api.excluded();
    show("video-separate", excluded ? T.video_separate : "");
    $("video-separate").hidden = !excluded;
    // Those in the room without video (theirs is off, failed or never started): by chat only.
    const inVideo = new Set([...v.layout.slots.map((slot) => slot.participant), ...v.layout.unplaced]);
    const absent = [];
    if (v.wanted && v.state === "connected" && !excluded) {
      for (const person of api.participants().values()) {
        if (person.id === data.me || person.state !== "admitted" || !person.online) continue;
        if (!inVideo.has(person.id)) absent.push(person.name);
      }
    }
    show("video-absent", absent.length ? fmt(T.video_absent, { names: absent.join(", ") }) : "");
    $("video-absent").hidden = !absent.length;
  }

  function renderControls() {
    $("video-start").hidden = v.wanted;
    $("audio-start").hidden = v.wanted;
    for (const id of ["toggle-mic", "toggle-camera", "video-stop"]) $(id).hidden = !v.wanted;
    $("own-tile").hidden = !v.wanted;
    const mic = $("toggle-mic");
    mic.textContent = v.micOn ? T.mic_turn_off : T.mic_turn_on;
    mic.setAttribute("aria-pressed", String(!v.micOn));
    mic.disabled = !(v.local && v.local.getAudioTracks().length);
    const camera = $("toggle-camera");
    camera.textContent = v.cameraOn ? T.camera_turn_off : T.camera_turn_on;
    camera.setAttribute("aria-pressed", String(!v.cameraOn));
    if (v.state === "off") show("video-status", T.video_off);
  }

  // ---- the participant's controls ----------------------------------------------------------------

  async function start(withCamera) {
    show("video-error-text", "");
    $("video-error").hidden = true;
    v.wanted = true;
    v.retries = 0;
    setState("connecting");
    const found = await devices(withCamera);
    if (!v.wanted) {
      for (const track of found.stream.getTracks()) track.stop();
      return;
    }
    v.local = found.stream;
    v.micOn = found.stream.getAudioTracks().length > 0;
    v.cameraOn = found.stream.getVideoTracks().length > 0;
    if (found.problem) {
      // What does not work is said; the rest goes ahead (seeing and hearing the others).
      $("video-error").hidden = false;
      show("video-error-text", found.problem + " " + T.devices_partial);
    }
    ownPreview();
    renderControls();
    await connect();
  }

  async function leave() {
    v.wanted = false;
    const had = v.pc !== null;
    dropConnection();
    releaseDevices();
    v.layout = { slots: [], unplaced: [] };
    renderTiles();
    setState("off");
    if (had) await mediaCall("media_leave", {});
  }

  $("video-start").addEventListener("click", () => start(true));
  $("audio-start").addEventListener("click", () => start(false));
  $("video-stop").addEventListener("click", () => {
    leave();
    $("video-start").focus();
  });
  $("video-retry").addEventListener("click", () => {
    v.retries = 0;
    if (api.connected()) connect();
  });

  $("toggle-mic").addEventListener("click", () => {
    const track = v.local && v.local.getAudioTracks()[0];
    if (!track) return;
    v.micOn = !v.micOn;
    track.enabled = v.micOn;
    ownPreview();
    renderControls();
    sendState();
  });

  $("toggle-camera").addEventListener("click", async () => {
    if (v.cameraOn) {
      // Off for real: the camera's light goes out, nothing is sent.
      v.cameraOn = false;
      for (const track of v.local.getVideoTracks()) {
        track.stop();
        v.local.removeTrack(track);
      }
      if (v.videoTx) await v.videoTx.sender.replaceTrack(null);
    } else {
      let track;
      try {
        track = (await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } } })).getVideoTracks()[0];
      } catch (error) {
        $("video-error").hidden = false;
        show("video-error-text", deviceError(error));
        return;
      }
      if (!v.local) v.local = new MediaStream();
      v.local.addTrack(track);
      v.cameraOn = true;
      if (v.videoTx) await v.videoTx.sender.replaceTrack(track);
    }
    ownPreview();
    renderControls();
    sendState();
  });

  // ---- what room.js calls ----------------------------------------------------------------------

  return {
    admitted(snapshot) {
      section.hidden = false;
      const muted = snapshot.media && snapshot.media.muted;
      if (Array.isArray(muted)) v.muted = new Set(muted);
      for (const person of snapshot.participants || []) {
        if (person.audio_muted === true) v.muted.add(person.id);
        else if (person.audio_muted === false) v.muted.delete(person.id);
      }
      // After the socket came back the server has closed our old connection: a new one.
      if (v.wanted && (v.stale || !v.pc || v.state === "failed")) connect();
      v.stale = false;
      renderTiles();
      renderControls();
    },
    update() {
      renderTiles();
    },
    disconnected() {
      // The server ends the media of a participant whose connection to the room is lost.
      if (v.elsewhere) v.elsewhere.socket.disconnect();
      v.elsewhere = null;
      if (!v.wanted) return;
      dropConnection();
      v.stale = true;
      setState("connecting");
    },
    stop() {
      if (v.elsewhere) v.elsewhere.socket.disconnect();
      v.elsewhere = null;
      v.wanted = false;
      dropConnection();
      releaseDevices();
      v.layout = { slots: [], unplaced: [] };
      renderTiles();
      section.hidden = true;
    },
    mutedAudio(id) {
      return v.muted.has(id);
    },
    async toggleMute(person) {
      return mediaCall("media_mute", { account: person.id, muted: !v.muted.has(person.id) });
    },
  };
};
