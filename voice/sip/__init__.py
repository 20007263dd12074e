"""SIP (RFC 3261): messages, SDP, transactions, dialogs, the UDP transport and the user agent."""
