"""Speech synthesis behind the ``Synthesizer`` interface (pyttsx3 with espeak-ng), with a cache."""
