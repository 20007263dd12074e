"""Masking of personal data, shared by the gateway (Python 3.11) and Rasa's tracker store
(Python 3.10): standard library only, importing nothing else of the project."""
