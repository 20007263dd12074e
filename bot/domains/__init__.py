"""The domain packs that ship with the service: ``energy``, the sample (see ``bot/domain.py``)."""
