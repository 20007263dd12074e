"""The project's code that runs inside Rasa's process (Python 3.10, Rasa 3.6).

``launcher`` starts the Rasa CLI (``python -m triage_rasa.launcher run ...``); ``channel`` and
``tracker_store`` hold the classes the gateway names in the credentials and endpoints files it
writes. Nothing here imports the gateway: what both sides need is in ``triage_pii``.
"""
