"""Sans-I/O media: RTP packets, RFC 4571 framing (PS demux comes with the live-stream issue)."""
