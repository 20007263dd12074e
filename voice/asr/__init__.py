"""Speech recognition behind the ``Recognizer`` interface (Vosk by default, faster-whisper)."""
