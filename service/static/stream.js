// The client side of the /v1/stream protocol (see service/streams.py): hello, binary frames, JSON events.

const MAGIC = [0x53, 0x32, 0x44, 0x31]; // "S2D1"
const HEADER_BYTES = 16; // magic (4), float64 LE client timestamp in ms (8), uint32 LE sequence number (4)
const MAX_BUFFERED = 1 << 20; // bytes queued in the socket: beyond it the client skips frames (its own backpressure)

/** Milliseconds on a clock shared by the frames we send and the results we receive. */
export const nowMs = () => performance.timeOrigin + performance.now();

/** One encoded image -> the binary message of one frame. */
export function packFrame(imageBytes, tsMs, seq) {
  const message = new Uint8Array(HEADER_BYTES + imageBytes.byteLength);
  const view = new DataView(message.buffer);
  MAGIC.forEach((b, i) => view.setUint8(i, b));
  view.setFloat64(4, tsMs, true);
  view.setUint32(12, seq >>> 0, true);
  message.set(new Uint8Array(imageBytes), HEADER_BYTES);
  return message;
}

export class StreamConnection extends EventTarget {
  /** @param {object} hello the hello fields (model, fps, smoothing, ...); @param {string} apiKey optional */
  constructor(hello, apiKey = "") {
    super();
    this.hello = { type: "hello", ...hello };
    const url = new URL("/v1/stream", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    // Browsers cannot set headers on a WebSocket: the key travels as the subprotocol "bearer.KEY".
    const protocols = apiKey ? ["s2d.v1", `bearer.${apiKey}`] : ["s2d.v1"];
    this.ws = new WebSocket(url, protocols);
    this.ws.binaryType = "arraybuffer";
    this.ready = null; // the server's ready event
    this.seq = 0;
    this.skipped = 0; // frames not sent because the socket was still busy
    this.ws.onopen = () => this.ws.send(JSON.stringify(this.hello));
    this.ws.onmessage = (msg) => this.#onMessage(msg);
    this.ws.onclose = (e) => this.#emit("close", { code: e.code, reason: e.reason });
    this.ws.onerror = () => this.#emit("socket-error", {});
  }

  get open() { return this.ws.readyState === WebSocket.OPEN && this.ready !== null; }

  /** Send one encoded frame (JPEG/WebP bytes) stamped `tsMs`; false when skipped. */
  sendFrame(imageBytes, tsMs) {
    if (!this.open) return false;
    if (this.ws.bufferedAmount > MAX_BUFFERED) { this.skipped += 1; return false; }
    this.ws.send(packFrame(imageBytes, tsMs, this.seq++));
    return true;
  }

  end() { if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "end" })); }
  close() { this.ws.close(1000, "client stopped"); }

  #onMessage(msg) {
    if (typeof msg.data !== "string") return;
    const event = JSON.parse(msg.data);
    if (event.type === "ready") this.ready = event;
    this.#emit(event.type, event);
  }

  #emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
