"""What faces the POS: requests over MQTT (orders, returns and commands), one way:
request -> validate -> (outbox | ledger) -> Leat -> reply / event.

    intake.py    transport checks (size, depth, reply topic), the worker thread, orders
    amounts.py   Leat's line amounts (price x quantity - discount)
"""
