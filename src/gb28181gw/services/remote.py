"""Operator requests for a device another node owns (issue 17): forwarded to that node by RPC.

Transactions and dialogs never leave the node that owns the device's socket, so a request the
admin API (and so the CLI) receives for a device registered at another node is sent to that
node (:mod:`gb28181gw.store.rpc`), which makes it as if it had been asked itself, and its answer
(or refusal, with its status) is returned. Forwarded:

=====================  ===============================  ======================
admin API              what it does on the owner        RPC method
=====================  ===============================  ======================
POST /ptz              PTZCmd to the channel            ``device.ptz``
POST /control          a DeviceControl command          ``device.command``
GET  /devices/ID/info  DeviceInfo query                 ``device.query``
GET  /devices/ID/status DeviceStatus query              ``device.query``
POST /devices/ID/catalog  Catalog query (stored there)  ``device.catalog``
GET  /channels/ID/records RecordInfo query              ``device.records``
=====================  ===============================  ======================

Listings (devices, channels, alarms) read this node's memory and the shared store, as before.
A viewer's streams (POST /streams, /playbacks and every ``/streams/ID`` route) are forwarded by
:class:`gb28181gw.admin.streams.StreamApi` (``stream.*`` methods), through :meth:`RemoteDevices.node_of`
and :attr:`RemoteDevices.rpc`: their answers are built by the admin's stream code on both ends.

Which node owns a device: the ``owner`` hash (written at each REGISTER); a channel not in this
node's memory is found in the shared store. A device with no owner recorded, or owned by this
node, is handled here as before; so is every device while Redis cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gb28181gw.errors import DeviceError, NodeUnreachable, RpcError, RpcTimeout
from gb28181gw.gb.rpc import CONTROL_TIMEOUT, Call
from gb28181gw.manscdp.ptz import PtzCmd

from .devices import DeviceService

if TYPE_CHECKING:  # redis-py, imported with store.rpc, is needed only with the redis store
    from gb28181gw.store.rpc import RedisRpc

log = logging.getLogger("gb28181gw.remote")

#: Seconds a forwarded query may take: the device's own answer time (devices.query_timeout is
#: typically a few seconds) and a Catalog of many parts; the call's deadline.
QUERY_TIMEOUT = 30.0


class RemoteDevices:
    """Forwards operator requests for other nodes' devices, and serves theirs for ours.

    Args:
        rpc: this node's end of the calls between nodes.
        devices: the device service requests are made with on the owning node.
    """

    def __init__(self, rpc: RedisRpc, devices: DeviceService) -> None:
        self.rpc = rpc
        self.devices = devices
        rpc.handle("device.ptz", self._ptz)
        rpc.handle("device.command", self._command)
        rpc.handle("device.query", self._query)
        rpc.handle("device.catalog", self._catalog)
        rpc.handle("device.records", self._records)

    async def node_of(self, target_id: str) -> str | None:
        """The other node owning ``target_id``'s device (a device or channel ID); ``None`` when it is
        ours, nobody's, or Redis cannot say."""
        device_id = self.devices.owner_of(target_id)
        try:
            if device_id is None:
                device_id = await self.rpc.device_of(target_id)
            if device_id is None:
                return None
            node = await self.rpc.owner(device_id)
        except NodeUnreachable as exc:
            log.warning("owner of a device cannot be read; asked here", extra={"target": target_id, "error": str(exc)})
            return None
        return node if node and node != self.rpc.node else None

    async def call(
        self, node: str, method: str, args: Mapping[str, Any], *, timeout: float = CONTROL_TIMEOUT
    ) -> dict[str, Any]:
        """``method`` on ``node``; its failures as the :class:`DeviceError` a local request would raise.

        Raises:
            DeviceError: the owner refused (its status), is not live (503), or did not answer (408).
        """
        try:
            return await self.rpc.call(node, method, args, timeout=timeout)
        except RpcTimeout as exc:
            raise DeviceError(str(exc), DeviceError.NO_ANSWER) from None
        except NodeUnreachable as exc:
            raise DeviceError(str(exc), DeviceError.UNREACHABLE) from None
        except RpcError as exc:
            raise DeviceError(str(exc), exc.status) from None

    # --- the owner's side ---------------------------------------------------------------

    async def _ptz(self, call: Call) -> dict[str, Any]:
        cmd = PtzCmd.decode(str(call.args["cmd"]))
        await self.devices.ptz(str(call.args["channel"]), cmd)
        return {"sent": cmd.encode()}

    async def _command(self, call: Call) -> dict[str, Any]:
        a = call.args
        return dict(await self.devices.command(str(a["target"]), str(a["name"]), str(a["value"]), wait=bool(a["wait"])))

    async def _query(self, call: Call) -> dict[str, Any]:
        device_id = str(call.args["device"])
        if call.args.get("what") == "info":
            return dict(await self.devices.device_info(device_id))
        return dict(await self.devices.device_status(device_id))

    async def _catalog(self, call: Call) -> dict[str, Any]:
        device_id = str(call.args["device"])
        result = await self.devices.catalog(device_id)
        return {"device_id": device_id, "channels": len(result.items), "sum_num": result.sum_num,
                "complete": result.complete, "messages": result.messages}  # fmt: skip

    async def _records(self, call: Call) -> dict[str, Any]:
        a = call.args
        result = await self.devices.records(str(a["channel"]), str(a["from"]), str(a["to"]), record_type=str(a["type"]))
        items = sorted(
            ({"channel_id": i.device_id, **i.fields} for i in result.items.values()),
            key=lambda r: r.get("StartTime", ""),
        )
        return {"records": items, "sum_num": result.sum_num, "complete": result.complete}
