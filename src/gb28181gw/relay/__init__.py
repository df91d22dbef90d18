"""The media relay: the asyncio shell around the media core.

``forwarder`` moves the packets; ``records`` holds what a relay reports (events, figures)
and ``commands`` what it is asked (one table, run in-process or in a worker); ``workers``
runs the forwarder in the gateway's loop or in worker processes.
"""
