"""The media relay: the forwarder and the workers it runs in (the asyncio shell around the media core)."""
