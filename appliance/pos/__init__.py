"""What faces the POS: requests over MQTT (orders, returns and commands), one way:
request -> validate -> (outbox | ledger) -> Leat -> reply / event.

    intake.py    transport checks (size, depth, reply topic), the worker thread, orders
    amounts.py   Leat's line amounts (price x quantity - discount)
    errors.py    every error code a request can be answered with
    commands.py  the one verb table: read / takes value / gives value back, and reconciliation
    runner.py    runs commands: request_id idempotency, expiry, deadline, events/command
    ledger.py    request_id -> outcome (SQLite, >= 24 h), and our locks' release keys
    verbs.py     what each verb asks Leat, and how a lost answer is reconciled
"""
