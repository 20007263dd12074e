"""RTP (RFC 3550): packets, the per-call session, the jitter buffer, RFC 4733 events."""
