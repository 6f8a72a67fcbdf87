// The try-it form of a pipeline's page: runs the pipeline through the admin API and shows
// the output as it streams (server-sent events: delta, then result or error).

/** Parse a text/event-stream body into its JSON data payloads. */
export async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield JSON.parse(data);
    }
  }
}

function show(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function runLink(state, runId, text) {
  state.replaceChildren(text + " ");
  if (runId) {
    const a = document.createElement("a");
    a.href = `/ui/runs/${encodeURIComponent(runId)}`;
    a.textContent = `run ${runId}`;
    state.append(a);
  }
}

const form = document.getElementById("tryit");
if (form) {
  const input = form.querySelector("textarea");
  const out = document.getElementById("try-out");
  const state = document.getElementById("try-state");
  const button = document.getElementById("run-btn");
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    let value;
    try { value = text === "" ? null : JSON.parse(text); } catch { value = input.value; }
    out.textContent = "";
    out.classList.remove("bad");
    state.textContent = "running…";
    button.disabled = true;
    try {
      const response = await fetch(`/api/pipelines/${encodeURIComponent(form.dataset.name)}/run`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({ input: value }),
      });
      const runId = response.headers.get("X-Harkd-Run-Id");
      if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        const body = await response.text();
        let message = body;
        try { message = JSON.parse(body).error.message; } catch { /* not JSON: show as is */ }
        out.textContent = message;
        out.classList.toggle("bad", !response.ok);
        runLink(state, runId, response.ok ? "done" : `failed (${response.status})`);
        return;
      }
      for await (const event of events(response.body)) {
        if (event.type === "delta") out.append(event.text);
        else if (event.type === "result") { out.textContent = show(event.output); runLink(state, event.run_id, "done"); }
        else if (event.type === "error") { out.textContent = event.message; out.classList.add("bad"); runLink(state, event.run_id, "failed"); }
      }
    } catch (err) {
      state.textContent = `failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
}

if (document.getElementById("ptt")) import("./talk.js");
