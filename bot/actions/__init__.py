"""Custom Rasa actions, served by the gateway on a loopback webhook."""
