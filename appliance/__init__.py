"""leat-scanner: a counter-top QR scanner appliance for the Leat loyalty platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leat-scanner")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

CONTRACT_VERSION = "1"
"""Version of the MQTT contract (topics and payload schemas) this build speaks."""
