"""Attach the technician page and the snapshot socket to a running scan service."""

from __future__ import annotations

import logging

from appliance.config import Config
from appliance.daemon import ScanService
from appliance.web.preview import PreviewTap
from appliance.web.server import WebPage, start_page
from appliance.web.snapshot import SnapshotServer

log = logging.getLogger(__name__)


class Attached:
    """The page (when enabled and listening) and the snapshot socket; `close` stops both."""

    def __init__(self, page: WebPage | None, snapshots: SnapshotServer | None) -> None:
        self.page = page
        self.snapshots = snapshots

    def close(self) -> None:
        """Stop serving."""
        if self.page is not None:
            self.page.close()
        if self.snapshots is not None:
            self.snapshots.close()


def attach(cfg: Config, service: ScanService) -> Attached:
    """Give `service` a preview tap; serve the page (`web.enabled`) and the snapshot socket.
    Neither failing to listen stops the scanner: it is logged."""
    tap = PreviewTap(cfg.web.max_viewers)
    service.preview = tap
    page = start_page(cfg, service, tap) if cfg.web.enabled else None
    snapshots = None
    try:
        snapshots = SnapshotServer(cfg, tap)
    except OSError as exc:
        log.error("snapshot socket unavailable (leat-scanner snapshot will read the camera "
                  "itself, which fails while this runs): %s", exc)
    return Attached(page, snapshots)
