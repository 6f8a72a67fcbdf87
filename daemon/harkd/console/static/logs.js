// The live log: appends lines from /ui/logs/stream (filtered by the server), keeps the
// newest 1,000, follows the end unless the reader scrolled up, and can pause.

const MAX = 1000;
const box = document.getElementById("log");
const state = document.getElementById("log-state");
const pause = document.getElementById("pause");
const query = new URLSearchParams(location.search);
let paused = false;
let held = [];

function line(data) {
  const div = document.createElement("div");
  div.className = `line lv-${data.level}`;
  const part = (cls, text) => {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    return span;
  };
  div.append(part("ts", (data.timestamp || "").slice(11, 19)), " ", part("lv", data.level), " ", part("ev", data.event));
  for (const [k, v] of Object.entries(data)) {
    if (["timestamp", "level", "event", "seq"].includes(k)) continue;
    const kv = part("kv", "");
    kv.append(part("k", k), "=", part("v", String(v)));
    div.append(" ", kv);
  }
  return div;
}

function add(lines) {
  const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  document.getElementById("log-empty")?.remove();
  box.append(...lines.map(line));
  while (box.childElementCount > MAX) box.firstElementChild.remove();
  if (follow) box.scrollTop = box.scrollHeight;
}

if (box) {
  box.scrollTop = box.scrollHeight;
  const params = new URLSearchParams({ after: box.dataset.after });
  for (const key of ["pipeline", "level"]) if (query.get(key)) params.set(key, query.get(key));
  const source = new EventSource(`/ui/logs/stream?${params}`);
  source.addEventListener("open", () => { state.textContent = "live"; });
  source.addEventListener("error", () => { state.textContent = "reconnecting…"; });
  source.addEventListener("log", (e) => {
    const data = JSON.parse(e.data);
    if (paused) { held.push(data); state.textContent = `paused, ${held.length} new`; }
    else add([data]);
  });
  addEventListener("pagehide", () => source.close());
  pause.hidden = false;
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) { add(held.slice(-MAX)); held = []; state.textContent = "live"; }
  });
}
