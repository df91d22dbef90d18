"""Stream errors are told apart by type and code, not by their text: a media port taken by
another program is skipped (RelayFailure.PORT_TAKEN, also across a worker's pipe) and the
INVITE offers the next one; an unregistered device is 480, an unknown one 404."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from gb28181gw.errors import StreamError
from gb28181gw.gb.model import Channel
from tests.helpers import media_port
from tests.media import UdpConsumer, gb_ps, packetize, send_udp, wait_for

from .conftest import start_gateway
from .test_devices import finished, free_udp_port, register, register_expires_zero
from .test_streams import CH, NVR, answer, gateway_with_device, scenario

pytestmark = pytest.mark.sipp


class InOrder(random.Random):
    """A random source that makes a port pool hand out its ports in order."""

    def randrange(self, n: int) -> int:  # type: ignore[override]
        return n - 1


@pytest.mark.parametrize("workers", ["0", "1"], ids=["in-process", "worker-process"])
async def test_a_taken_media_port_is_skipped_and_the_offer_names_the_next(tmp_path: Path, workers: str) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("0.0.0.0", media_port(600)))  # another program has the first port of our range
    gw, device = await gateway_with_device(
        tmp_path,
        scenario(answer()),
        **{"media.workers": workers, "media.port_min": str(media_port(600)), "media.port_max": str(media_port(699))},
    )
    gw.streams.pools[0].rng = InOrder()  # ports are random since issue 10: make the taken one come first
    udp = await UdpConsumer.start()
    try:
        st, _ = await gw.streams.play(CH, transport="udp", host="127.0.0.1", port=udp.port)
        assert st.port == media_port(602) and st.session.port == media_port(602)
        assert (
            f"m=video {media_port(602)} RTP/AVP" in (tmp_path / "device.msg").read_text()
        )  # what the device was offered
        packets = packetize(gb_ps(10, 5), int(st.session.ssrc))
        await send_udp(packets, st.port)
        await wait_for(lambda: len(udp.got.packets) == len(packets))
        await gw.streams.stop_stream(st.id)
        await finished(device)
        await wait_for(lambda: gw.streams.pools[0].in_use == 0)
    finally:
        holder.close()
        udp.close()
        await gw.stop()


async def test_unregistered_device_is_480_and_an_unknown_one_404(tmp_path: Path) -> None:
    gw = await start_gateway()
    try:
        await register(gw, tmp_path, free_udp_port())
        gw.devices.channels.setdefault(NVR, {})[CH] = Channel(CH, NVR)
        await register_expires_zero(gw, tmp_path, free_udp_port())
        for target in (CH, NVR):
            with pytest.raises(StreamError, match="not registered") as info:
                await gw.streams.play(target, transport="udp", host="127.0.0.1", port=9)
            assert info.value.status == 480
        stray = "34020000001180000099"  # a channel listed under a device we do not know
        gw.devices.channels[stray] = {"34020000001310000099": Channel("34020000001310000099", stray)}
        with pytest.raises(StreamError, match="no device") as unknown:
            await gw.streams.play("34020000001310000099", transport="udp", host="127.0.0.1", port=9)
        assert unknown.value.status == 404
        assert gw.streams.results[("not-registered",)] == 2 and gw.streams.results[("unknown-channel",)] == 1
    finally:
        await gw.stop()
