"""The hostile suite drives the same real-socket gateway as the shell tests."""

from tests.shell.conftest import gateway, start_gateway

__all__ = ["gateway", "start_gateway"]
