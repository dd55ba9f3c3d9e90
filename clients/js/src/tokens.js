// Access tokens from the product's ``getToken`` callback.
//
// One refresh at a time: concurrent expiries (``token_expiring`` on two sockets, a 4001
// and an ``auth_expired`` together) share one call. A caller that saw generation ``g``
// and asks again after another refresh already replaced it gets the newer token without a
// new call. A refused fresh token or a failing ``getToken`` means ``unauthorized``: the
// client stops, it never loops.

export class UnauthorizedError extends Error {
  constructor(message = "unauthorized", cause) {
    super(message);
    this.name = "UnauthorizedError";
    this.code = "unauthorized";
    if (cause !== undefined) this.cause = cause;
  }
}

export class TokenSource {
  /** ``getToken({reason})`` returns (or resolves to) a token string, or null for cookie auth. */
  constructor(getToken) {
    if (typeof getToken !== "function") throw new TypeError("getToken must be a function");
    this.getToken = getToken;
    this.token = null;
    this.generation = 0;      // bumps with every token obtained
    this.inFlight = null;
    this.calls = 0;
  }

  /**
   * A fresh token for ``reason`` ("start", "token_expiring", "token_expired",
   * "auth_expired", "unauthorized"). ``since``: the generation the caller used; when a
   * newer one exists already it is returned without calling ``getToken``.
   */
  refresh(reason, since = null) {
    if (since !== null && since < this.generation && !this.inFlight) return Promise.resolve(this.token);
    if (!this.inFlight) {
      this.calls += 1;
      this.inFlight = (async () => {
        try {
          let token;
          try {
            token = await this.getToken({ reason });
          } catch (err) {
            throw new UnauthorizedError("getToken failed", err);
          }
          if (token !== null && token !== undefined && typeof token !== "string") {
            throw new UnauthorizedError("getToken returned neither a string nor null");
          }
          this.token = token ?? null;
          this.generation += 1;
          return this.token;
        } finally {
          this.inFlight = null;
        }
      })();
    }
    return this.inFlight;
  }
}
