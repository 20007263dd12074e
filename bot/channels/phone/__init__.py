"""The phone channel's side of the brain: ``PhoneBrain`` implements ``voice.brain.Brain``."""
