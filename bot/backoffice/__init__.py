"""The back office: the seam to the company's own systems, its HTTP connector and its fake."""
