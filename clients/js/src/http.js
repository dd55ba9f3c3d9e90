// HTTP to a Squall server: JSON in and out, the access token as a Bearer header (or the
// browser's cookies when the token is null), one error type, one retry after a refresh.

import { retryAfterMs } from "./backoff.js";
import { UnauthorizedError } from "./tokens.js";

/** An HTTP error with the server's ``{error: {code, message}}`` fields. */
export class SquallError extends Error {
  constructor(status, code, message, retryAfter = 0) {
    super(message || code || `HTTP ${status}`);
    this.name = "SquallError";
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfter;
  }
}

/** The parsed answer of a finished request, or its SquallError. */
async function answer(status, parse, retryAfter) {
  let data = null;
  try { data = await parse(); } catch { data = null; }
  if (status >= 200 && status < 300) return data;
  const e = (data && data.error) || {};
  throw new SquallError(status, e.code || "http_error", e.message || `HTTP ${status}`, retryAfterMs(retryAfter));
}

export class Http {
  /** ``url``: the server's base URL ("" for this origin); ``tokens``: a TokenSource. */
  constructor({ url = "", fetch: fetchImpl, credentials = "same-origin", tokens }) {
    this.base = String(url || "").replace(/\/+$/, "");
    this.fetch = fetchImpl || globalThis.fetch.bind(globalThis);
    this.credentials = credentials;
    this.tokens = tokens;
  }

  /** Absolute (or origin-relative) URL of ``path``. */
  url(path) { return this.base + path; }

  /** ws:// or wss:// URL of ``path``. */
  wsUrl(path) {
    if (this.base) return this.base.replace(/^http/, "ws") + path;
    const loc = globalThis.location;
    const scheme = loc && loc.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${loc ? loc.host : "localhost"}${path}`;
  }

  /** Headers carrying the current token (none in cookie mode). */
  authHeaders() {
    const token = this.tokens.token;
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  /** One request, no retry. Resolves with the parsed JSON; rejects with SquallError. */
  async once(method, path, body, signal) {
    const init = { method, credentials: this.credentials, cache: "no-store",
                   headers: { Accept: "application/json", ...this.authHeaders() } };
    if (signal) init.signal = signal;
    if (body === undefined && method !== "GET" && method !== "HEAD") body = {};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await this.fetch(this.url(path), init);
    } catch (err) {
      if (signal && signal.aborted) throw err;
      throw new SquallError(0, "network_error", "The server cannot be reached");
    }
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    if (!resp.ok) {
      const e = (data && data.error) || {};
      throw new SquallError(resp.status, e.code || "http_error", e.message || `HTTP ${resp.status}`,
                            retryAfterMs(resp.headers.get("Retry-After")));
    }
    return data;
  }

  /**
   * ``method path`` with an optional JSON body. A 401 gets one fresh token from
   * ``getToken`` and one retry; a 401 after that is an UnauthorizedError.
   */
  async request(method, path, body) {
    const generation = this.tokens.generation;
    try {
      return await this.once(method, path, body);
    } catch (err) {
      if (!(err instanceof SquallError) || err.status !== 401) throw err;
      await this.tokens.refresh("unauthorized", generation);
      try {
        return await this.once(method, path, body);
      } catch (again) {
        if (again instanceof SquallError && again.status === 401) throw new UnauthorizedError("token refused", again);
        throw again;
      }
    }
  }

  /**
   * Upload ``body`` (a Blob, File, ArrayBuffer or typed array) to ``POST /api/uploads``;
   * resolves with the upload (``{id, content_type, size, …}``). With ``onProgress`` and an
   * XMLHttpRequest (browsers), ``onProgress(sentBytes, totalBytes)`` follows the upload;
   * elsewhere it is called once at the end. A 401 gets one fresh token and one retry.
   */
  async upload(body, { filename = "", onProgress = null, signal = null } = {}) {
    const path = `/api/uploads?filename=${encodeURIComponent(filename || (body && body.name) || "")}`;
    const generation = this.tokens.generation;
    try {
      return await this.uploadOnce(path, body, onProgress, signal);
    } catch (err) {
      if (!(err instanceof SquallError) || err.status !== 401) throw err;
      await this.tokens.refresh("unauthorized", generation);
      return this.uploadOnce(path, body, onProgress, signal);
    }
  }

  uploadOnce(path, body, onProgress, signal) {
    const headers = { Accept: "application/json", "Content-Type": "application/octet-stream", ...this.authHeaders() };
    const XHR = globalThis.XMLHttpRequest;
    if (!onProgress || !XHR) {
      return this.fetch(this.url(path), { method: "POST", credentials: this.credentials, headers, body, signal: signal || undefined })
        .catch((err) => {
          if (signal && signal.aborted) throw err;
          throw new SquallError(0, "network_error", "The server cannot be reached");
        })
        .then((resp) => answer(resp.status, () => resp.json(), resp.headers.get("Retry-After")))
        .then((data) => { if (onProgress) onProgress(data.size, data.size); return data; });
    }
    return new Promise((resolve, reject) => {
      const xhr = new XHR();
      xhr.open("POST", this.url(path));
      xhr.withCredentials = this.credentials === "include";
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : 0);
      xhr.onerror = () => reject(new SquallError(0, "network_error", "The server cannot be reached"));
      xhr.onabort = () => reject(new SquallError(0, "aborted", "The upload was cancelled"));
      xhr.onload = () => {
        answer(xhr.status, () => JSON.parse(xhr.responseText), xhr.getResponseHeader("Retry-After")).then(resolve, reject);
      };
      if (signal) signal.addEventListener("abort", () => xhr.abort(), { once: true });
      xhr.send(body);
    });
  }

  /** A single-use stream ticket (for a WebSocket URL). */
  async ticket() {
    const { ticket } = await this.once("POST", "/api/stream-ticket", {});
    return ticket;
  }
}
