"""Live fan-out of events to the sockets of customers and agents: the ``Hub`` interface and its
backends."""
