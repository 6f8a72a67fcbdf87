// Every page: the light/dark switch, filters that apply on change, and live refresh.
// A page marks the part that changes with id="live" and data-live="pipeline", "run"
// (refresh on those server-sent events) or "poll" (refresh every few seconds).

const root = document.documentElement;
const THEME = "harkd-theme";

function applyTheme(theme) {
  if (theme) root.dataset.theme = theme;
  else delete root.dataset.theme;
}

applyTheme(localStorage.getItem(THEME));
const themeButton = document.getElementById("theme");
if (themeButton) {
  themeButton.hidden = false;
  themeButton.addEventListener("click", () => {
    const dark = root.dataset.theme
      ? root.dataset.theme === "dark"
      : matchMedia("(prefers-color-scheme: dark)").matches;
    const next = dark ? "light" : "dark";
    localStorage.setItem(THEME, next);
    applyTheme(next);
  });
}

for (const select of document.querySelectorAll("form.filters select")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}

/** Fetch this page again and swap in its live parts. */
async function refresh(regions) {
  const response = await fetch(location.href, { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const region of regions) {
    const fresh = doc.getElementById(region.id);
    if (fresh) region.replaceChildren(...fresh.childNodes);
  }
}

/** Run fn at most once a second, however many events come. */
function throttled(fn) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) { again = true; return; }
    fn();
    timer = setTimeout(() => { timer = null; if (again) { again = false; fn(); } }, 1000);
  };
}

// Regions with an id and data-live="pipeline run" (the events that change them) or "poll";
// data-name limits the events to one pipeline's. While the keyboard focus is inside a
// region it is left alone (swapping it would throw the focus away); it catches up as soon
// as the focus leaves.
const regions = [...document.querySelectorAll("[data-live][id]")];
const kinds = new Set(regions.flatMap((r) => r.dataset.live.split(" ")));
let pending = false;

function focusInside() {
  const active = document.activeElement;
  return active && active !== document.body && regions.some((r) => r.contains(active));
}

const update = throttled(() => {
  if (focusInside()) { pending = true; return; }
  refresh(regions);
});

for (const region of regions) {
  region.addEventListener("focusout", (e) => {
    if (pending && !regions.some((r) => r.contains(e.relatedTarget))) {
      pending = false;
      update();
    }
  });
}

if (kinds.has("poll")) {
  setInterval(() => { if (!document.hidden) update(); }, 5000);
} else if (kinds.size) {
  const only = regions.find((r) => r.dataset.name)?.dataset.name;
  const events = new EventSource("/ui/events");
  for (const kind of kinds) {
    events.addEventListener(kind, (e) => {
      const data = JSON.parse(e.data);
      if (!only || data.name === only || data.pipeline === only) update();
    });
  }
  addEventListener("pagehide", () => events.close());
}
