// The checkout program, as a Node shop writes it with @sentry/node: the Node third of the same
// program written three times (checkout.py for sentry-sdk, checkout.js for @sentry/browser).
//
// Run as `node checkout.cjs` with the DSN in SENTRY_DSN and @sentry/node on NODE_PATH (the
// SDK is installed in tests/js/node_modules). The SDK runs with its default integrations: the last
// error is a promise nobody awaits, which the SDK reports as unhandled (its default mode warns and
// lets the process go on), then the program flushes and exits 0.
"use strict";

const Sentry = require("@sentry/node");

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

async function pay() {
  throw new PaymentTimeoutError("payment timed out");
}

async function main() {
  Sentry.init({ dsn: process.env.SENTRY_DSN, release: process.env.SENTRY_RELEASE, environment: "e2e" });
  Sentry.setUser({ id: "42", email: "ada@example.com", username: "ada", ip_address: "10.1.2.3" });
  Sentry.setTag("shop", "eu");
  Sentry.addBreadcrumb({ category: "cart", message: "cart opened" });
  Sentry.addBreadcrumb({ category: "cart", message: "coupon applied" });
  reportCheckout();
  // The retry fails the same way, from the same call site. (Called from one loop, the two events
  // would be identical to the frame, and the SDK's Dedupe integration would drop the second.)
  reportCheckout();
  Sentry.captureMessage("Inventory sync is lagging", "warning");
  pay(); // nobody awaits it: an unhandled rejection
  // Node reports an unhandled rejection once the microtasks have run, before the next turn.
  await new Promise((resolve) => setImmediate(resolve));
  if (!(await Sentry.flush(10000))) {
    console.error("checkout.cjs: the SDK did not send everything within 10 s");
    process.exitCode = 2;
  }
}

main();
