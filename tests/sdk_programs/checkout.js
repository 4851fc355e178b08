// The checkout program, as a shop's page runs it with @sentry/browser (the bundle's global
// `Sentry`): the browser third of the same program written three times (checkout.py for
// sentry-sdk, checkout.cjs for @sentry/node). checkout.html loads it; the page lists each event
// the SDK sends, and says "flushed" once the SDK has sent them all.
"use strict";

class LedgerUnavailableError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "LedgerUnavailableError";
  }
}

class CheckoutFailedError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "CheckoutFailedError";
  }
}

class PaymentTimeoutError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = "PaymentTimeoutError";
  }
}

function readLedger() {
  throw new LedgerUnavailableError("ledger unreachable");
}

function checkout() {
  try {
    readLedger();
  } catch (cause) {
    throw new CheckoutFailedError("checkout failed", { cause });
  }
}

function reportCheckout() {
  try {
    checkout();
  } catch (error) {
    Sentry.captureException(error);
  }
}

function pay() {
  throw new PaymentTimeoutError("payment timed out");
}

function listSent(event) {
  const exception = event.exception?.values?.at(-1);
  const item = document.createElement("li");
  const what = event.message ?? `${exception?.type}: ${exception?.value}`;
  item.textContent = `${event.level} ${what} (handled: ${exception?.mechanism?.handled ?? "-"}) ${event.event_id}`;
  document.getElementById("sent").append(item);
  return event;
}

function setting(name) {
  return document.querySelector(`meta[name="${name}"]`).content;
}

function showState(state) {
  document.body.dataset.state = state;
  document.getElementById("state").textContent = state;
}

Sentry.init({ dsn: setting("sentry-dsn"), release: setting("sentry-release"), environment: "e2e", beforeSend: listSent });
document.getElementById("sdk-version").textContent = Sentry.SDK_VERSION;
Sentry.setUser({ id: "42", email: "ada@example.com", username: "ada" });
Sentry.setTag("shop", "eu");
Sentry.addBreadcrumb({ category: "cart", message: "cart opened" });
Sentry.addBreadcrumb({ category: "cart", message: "coupon applied" });
reportCheckout();
reportCheckout(); // the retry fails the same way, from the same call site
Sentry.captureMessage("Inventory sync is lagging", "warning");
// Thrown from a timer, nobody catches it: the SDK reports it as unhandled.
setTimeout(pay, 0);
// Timers run in order: by then the SDK has the error above, and flush() waits until it is sent.
setTimeout(async () => showState((await Sentry.flush(10000)) ? "flushed" : "flush timed out"), 0);
