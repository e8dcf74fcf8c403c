"""A fake Leat: a stateful, Leat-compatible HTTP server for development, tests and the demo.

Not part of the Leat client (`appliance.leat`), and it imports nothing from it. Start it with
`appliance.sandbox.server.LeatSandbox` or `leat-scanner sandbox` (docs/sandbox.md).
"""
