"""The technician's page on the device: aim the camera, check health, play a test scan.

Served by `leat-scanner run` from the standard library's `http.server` (docs/web.md):
`preview` takes frames from the camera thread only while someone looks, `hints` says what
is wrong with a frame, `frames` keeps saved frames for a set time, `auth` guards the page,
`server` serves it, `snapshot` answers `leat-scanner snapshot` over a local socket.
"""
