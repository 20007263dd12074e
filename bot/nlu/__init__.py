"""The interface to Rasa: parse, turn, its HTTP client, training and the supervisor."""
