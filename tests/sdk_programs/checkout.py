"""The checkout program, as a Python shop writes it with sentry-sdk: the Python third of the same
program written three times (checkout.cjs for @sentry/node, checkout.js for @sentry/browser).

Run as ``python checkout.py`` with the DSN in ``SENTRY_DSN``. The SDK runs with its default
integrations, as an application sets it up: the last error is left uncaught on purpose, so the
``excepthook`` integration reports it and the ``atexit`` one flushes before the process exits (1).
"""

from __future__ import annotations

import os

import sentry_sdk


class LedgerUnavailableError(Exception):
    pass


class CheckoutFailedError(Exception):
    pass


class PaymentTimeoutError(Exception):
    pass


def read_ledger() -> None:
    raise LedgerUnavailableError("ledger unreachable")


def checkout() -> None:
    try:
        read_ledger()
    except LedgerUnavailableError as exc:
        raise CheckoutFailedError("checkout failed") from exc


def report_checkout() -> None:
    try:
        checkout()
    except CheckoutFailedError as exc:
        sentry_sdk.capture_exception(exc)


def pay() -> None:
    raise PaymentTimeoutError("payment timed out")


def main() -> None:
    # At exit the SDK waits shutdown_timeout (2 s by default) for its queue: too short on a busy machine.
    sentry_sdk.init(
        dsn=os.environ["SENTRY_DSN"], release=os.environ["SENTRY_RELEASE"], environment="e2e", shutdown_timeout=20
    )
    sentry_sdk.set_user({"id": "42", "email": "ada@example.com", "username": "ada", "ip_address": "10.1.2.3"})
    sentry_sdk.set_tag("shop", "eu")
    sentry_sdk.add_breadcrumb(category="cart", message="cart opened")
    sentry_sdk.add_breadcrumb(category="cart", message="coupon applied")
    report_checkout()
    report_checkout()  # the retry fails the same way, from the same call site
    sentry_sdk.capture_message("Inventory sync is lagging", "warning")
    pay()


if __name__ == "__main__":
    main()
