"use strict";
// The technician page: polls /api/aim (4 per second) and the preview JPEG when a new frame
// is there, /api/health every 2 s. Text only (textContent), never HTML from the device.
const AIM_EVERY_MS = 250;
const HEALTH_EVERY_MS = 2000;
let csrf = null;
let shownSequence = null;

const $ = (id) => document.getElementById(id);

function row(body, name, value, bad) {
  const tr = document.createElement("tr");
  const th = document.createElement("td");
  const td = document.createElement("td");
  th.textContent = name;
  td.textContent = value;
  if (bad) td.className = "bad";
  tr.append(th, td);
  body.append(tr);
}

async function getJson(url) {
  const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (answer.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  return answer.json();
}

async function post(url, body) {
  const answer = await fetch(url, {
    method: "POST", credentials: "same-origin", body: body || "",
    headers: { "X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded" },
  });
  return answer.json();
}

async function pollAim() {
  try {
    const aim = await getJson("/api/aim");
    const state = $("read-state");
    state.className = "state " + aim.state;
    state.textContent = aim.state === "read" ? `read: ${aim.read.format} ${aim.read.value}`
      : aim.state === "refused" ? `refused: ${aim.refused.format}, ${aim.refused.reason}`
      : (aim.error || "no code in view");
    const hints = $("hints");
    hints.replaceChildren();
    for (const hint of (aim.frame ? aim.frame.hints : [])) {
      const li = document.createElement("li");
      li.textContent = hint.text;
      li.dataset.code = hint.code;
      hints.append(li);
    }
    if (aim.frame && aim.frame.sequence !== shownSequence) {
      shownSequence = aim.frame.sequence;
      $("preview").src = `/preview.jpg?seq=${shownSequence}`;
      $("preview").dataset.sequence = String(shownSequence);
    }
    const cam = aim.camera;
    if (cam) {
      $("source-label").hidden = cam.source !== "replay";
      $("camera-settings").textContent =
        `camera (configured): ${cam.source}, ${cam.fps} fps, autofocus ${cam.autofocus}` +
        (cam.lens_position !== null ? ` at ${cam.lens_position} dioptres` : "") +
        `, exposure at most ${cam.max_exposure_us} µs, EV ${cam.ev}`;
    }
    const used = aim.frame && aim.frame.exposure;
    $("camera-in-use").textContent = !used ? "in use: not reported (replayed frames)" :
      "in use: " + [
        used.exposure_us !== null ? `exposure ${used.exposure_us} µs` : null,
        used.analogue_gain !== null ? `gain ${used.analogue_gain.toFixed(2)}` : null,
        used.lens_position !== null ? `lens ${used.lens_position.toFixed(2)} dioptres` : null,
        used.focus_fom !== null ? `focus figure ${used.focus_fom}` : null,
        used.lux !== null ? `${Math.round(used.lux)} lux` : null,
      ].filter((part) => part !== null).join(", ");
    const recent = $("recent-rows");
    recent.replaceChildren();
    for (const scan of aim.recent || []) {
      row(recent, new Date(scan.at * 1000).toLocaleTimeString(),
          `${scan.value} (${scan.format}): ${scan.outcome}`, scan.outcome !== "accepted");
    }
  } catch (error) {
    $("read-state").textContent = "preview unavailable";
  }
}

function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  return `${iso} (${seconds} s ago)`;
}

async function pollHealth() {
  try {
    const health = await getJson("/api/health");
    $("device").textContent = health.device_id;
    $("version").textContent = `version ${health.version}`;
    const body = $("health-rows");
    body.replaceChildren();
    row(body, "uptime", `${health.uptime_s} s`);
    const s = health.state;
    if (!s) { row(body, "state", "not computed yet"); return; }
    row(body, "camera", s.camera.ok ? `ok, ${s.camera.fps} fps` : `DEGRADED: ${s.camera.error}`,
        !s.camera.ok);
    row(body, "scans", `${s.scans_total} read, ${s.rejected_total} refused`);
    row(body, "last scan", ago(s.last_scan_at));
    if (s.feedback) row(body, "LEDs and buzzer", s.feedback.ok ? `ok (${s.feedback.pins})`
                                                  : `off: ${s.feedback.error}`, !s.feedback.ok);
    if (s.leat) {
      const reach = { true: "reachable", false: "UNREACHABLE" }[s.leat.reachable] || "not tried";
      row(body, "Leat", reach, s.leat.reachable === false);
      if (s.leat.alert) row(body, "Leat alert", JSON.stringify(s.leat.alert), true);
    } else {
      row(body, "Leat", "not configured");
    }
    if (s.outbox) {
      row(body, "outbox", s.outbox.depth === null
        ? `unreadable: ${s.outbox.damaged || s.outbox.error}`
        : `${s.outbox.depth} pending, oldest ${s.outbox.oldest_pending_age_s ?? "-"} s`,
        s.outbox.depth === null);
    }
    if (s.commands) row(body, "commands", `refused: ${s.commands.damaged}`, true);
    for (const [name, value] of Object.entries(s)) {
      if (!["schema", "device_id", "timestamp", "camera", "scans_total", "rejected_total",
            "last_scan_at", "feedback", "leat", "outbox", "commands"].includes(name)) {
        row(body, name, JSON.stringify(value));
      }
    }
    row(body, "state computed", s.timestamp);
  } catch (error) {
    $("health-rows").replaceChildren();
  }
}

async function start() {
  const session = await getJson("/api/session");
  csrf = session.csrf;
  $("save-frame").addEventListener("click", async () => {
    const done = await post("/api/save-frame");
    $("action-result").textContent = done.saved ? `saved ${done.folder}/${done.saved}`
                                                 : done.error;
  });
  for (const name of ["accepted", "denied"]) {
    $(`test-${name}`).addEventListener("click", async () => {
      const done = await post("/api/test-scan", `signal=${name}`);
      $("action-result").textContent = done.played ? `played: ${done.played}` : done.error;
    });
  }
  pollAim();
  pollHealth();
  setInterval(pollAim, AIM_EVERY_MS);
  setInterval(pollHealth, HEALTH_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", start);
