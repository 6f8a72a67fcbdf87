// Push-to-talk for audio WebSocket pipelines: the microphone, resampled to 16 kHz s16le,
// goes to the pipeline's WebSocket while the button is held; transcripts and replies are
// shown, and the reply's speech is played.

export const RATE = 16000;

/**
 * Linear-interpolating resampler from `from` Hz to `to` Hz that keeps its phase across
 * blocks. Before interpolating, a box filter as wide as the rate ratio takes out most of
 * what would alias (speech keeps its words; this is not a hi-fi resampler).
 */
export class Resampler {
  constructor(from, to = RATE) {
    this.step = from / to;
    this.width = Math.max(1, Math.floor(this.step));
    this.history = new Float32Array(this.width);
    this.pos = 1;
    this.last = 0;
  }

  push(input) {
    const w = this.width;
    const smooth = new Float32Array(input.length + 1);
    smooth[0] = this.last;
    const joined = new Float32Array(w - 1 + input.length);
    joined.set(this.history.subarray(1), 0);
    joined.set(input, w - 1);
    let sum = 0;
    for (let i = 0; i < w - 1; i++) sum += joined[i];
    for (let i = 0; i < input.length; i++) {
      sum += joined[i + w - 1];
      smooth[i + 1] = sum / w;
      sum -= joined[i];
    }
    this.history = joined.slice(joined.length - w);
    const out = [];
    let p = this.pos;
    while (p < smooth.length - 1) {
      const k = Math.floor(p);
      const f = p - k;
      out.push(smooth[k] * (1 - f) + smooth[k + 1] * f);
      p += this.step;
    }
    this.pos = p - (smooth.length - 1);
    this.last = smooth[smooth.length - 1];
    return Float32Array.from(out);
  }
}

/** Float samples in [-1, 1] as 16-bit little-endian PCM bytes. */
export function toS16le(samples) {
  const view = new DataView(new ArrayBuffer(samples.length * 2));
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, s < 0 ? s * 32768 : s * 32767, true);
  }
  return view.buffer;
}

/** 16-bit little-endian PCM bytes as float samples. */
export function fromS16le(buffer) {
  const view = new DataView(buffer);
  const out = new Float32Array(view.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(i * 2, true) / 32768;
  return out;
}

const box = document.getElementById("ptt");
if (box) setup(box);

function setup(box) {
  const button = document.getElementById("talk");
  const state = document.getElementById("ptt-state");
  const out = document.getElementById("ptt-out");
  const token = document.getElementById("ws-token");
  let socket = null;
  let capture = null;
  let player = null;
  let replyRate = 22050;
  let playhead = 0;
  const playing = new Set();

  function url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = token && token.value ? `?token=${encodeURIComponent(token.value)}` : "";
    return `${scheme}//${location.host}${box.dataset.path}${query}`;
  }

  function connect() {
    if (socket && socket.readyState <= WebSocket.OPEN) return Promise.resolve(socket);
    socket = new WebSocket(url());
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (e) => received(e.data));
    socket.addEventListener("close", () => { state.textContent = "disconnected"; socket = null; });
    return new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(socket), { once: true });
      socket.addEventListener("error", () => reject(new Error("cannot connect")), { once: true });
    });
  }

  function stopPlayback() {
    for (const source of playing) source.stop();
    playing.clear();
    playhead = 0;
  }

  function received(data) {
    if (data instanceof ArrayBuffer) {
      player ??= new AudioContext();
      const samples = fromS16le(data);
      if (!samples.length) return;
      const buffer = player.createBuffer(1, samples.length, replyRate);
      buffer.copyToChannel(samples, 0);
      const source = player.createBufferSource();
      source.buffer = buffer;
      source.connect(player.destination);
      playhead = Math.max(playhead, player.currentTime + 0.05);
      source.start(playhead);
      playhead += buffer.duration;
      playing.add(source);
      source.addEventListener("ended", () => playing.delete(source));
      return;
    }
    const event = JSON.parse(data);
    if (event.type === "transcript") out.textContent = `you: ${event.text}\n`;
    else if (event.type === "delta") out.append(event.text);
    else if (event.type === "audio") { replyRate = event.sample_rate; state.textContent = "speaking"; }
    else if (event.type === "interrupt") stopPlayback();
    else if (event.type === "result") { state.textContent = "done"; if (typeof event.output === "string" && !out.textContent.includes(event.output)) out.append(event.output); }
    else if (event.type === "error") { state.textContent = "failed"; out.append(`\n${event.message}`); }
  }

  let held = false;  // the button is down (the microphone may still be opening)

  async function start() {
    if (capture || held) return;
    held = true;
    button.setAttribute("aria-pressed", "true");
    stopPlayback();
    player ??= new AudioContext();  // made while the user presses, so it may play
    try {
      const ws = await connect();
      if (socket?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "interrupt" }));
      // The graph is ready before the microphone opens, so the first word is not lost.
      const context = new AudioContext();
      await context.audioWorklet.addModule(box.dataset.worklet);
      const node = new AudioWorkletNode(context, "harkd-capture");
      const stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
      });
      const mute = context.createGain();
      mute.gain.value = 0;
      const resampler = new Resampler(context.sampleRate, RATE);
      node.port.onmessage = (e) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(toS16le(resampler.push(e.data)));
      };
      context.createMediaStreamSource(stream).connect(node);
      node.connect(mute).connect(context.destination);
      capture = { stream, context, ws };
      state.textContent = "listening";
      if (!held) stop();  // let go while the microphone was opening
    } catch (err) {
      held = false;
      button.setAttribute("aria-pressed", "false");
      state.textContent = `cannot listen: ${err.message}`;
    }
  }

  function stop() {
    held = false;
    button.setAttribute("aria-pressed", "false");
    if (!capture) return;
    const { stream, context, ws } = capture;
    capture = null;
    for (const track of stream.getTracks()) track.stop();
    context.close();
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
    state.textContent = "thinking";
  }

  button.addEventListener("pointerdown", (e) => { e.preventDefault(); start(); });
  button.addEventListener("pointerup", stop);
  button.addEventListener("pointerleave", stop);
  button.addEventListener("keydown", (e) => {
    if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); start(); }
  });
  button.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") stop(); });
}
