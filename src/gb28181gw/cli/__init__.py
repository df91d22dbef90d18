"""The ``gb28181gw`` command line.

``serve`` runs the gateway; the other commands either work offline (``id``,
``config``) or talk to a running gateway through its admin API. The CLI stays
thin: it builds a Config and calls :mod:`gb28181gw.app`, or makes HTTP requests.
One module per group of commands; :mod:`.common` holds the root group, the admin
client and the output conventions every command follows.
"""

from gb28181gw.cli import (  # noqa: F401  (registers the commands)
    accelerate,
    audit,
    control,
    devices,
    doctor,
    housekeeping,
    ids,
    ledger,
    ledger_export,
    media,
    nodes,
    playback,
    serve,
    tokens,
    upstreams,
)
from gb28181gw.cli.common import main
from gb28181gw.cli.devices import _channel_tree

__all__ = ["main", "_channel_tree"]
