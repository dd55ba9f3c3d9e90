// HTTP helper: JSON in and out, the login cookie rides along (same origin), one error type.

/** An HTTP error with the server's ``{error: {code, message}}`` fields. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

/** ``method path`` with an optional JSON body; resolves with the parsed JSON answer. */
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network_error", "The server cannot be reached");
  }
  let data = null;
  try { data = await resp.json(); } catch { data = null; }
  if (!resp.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(resp.status, e.code || "http_error", e.message || `HTTP ${resp.status}`);
  }
  return data;
}
