# Rasa Open Source with the triage model trained at build time.
# Build from the repository root: docker build -f docker/rasa.Dockerfile .
FROM python:3.10-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RASA_TELEMETRY_ENABLED=false

COPY requirements-rasa.txt /tmp/requirements-rasa.txt
RUN pip install --no-cache-dir 'setuptools<70' && pip install --no-cache-dir -r /tmp/requirements-rasa.txt

WORKDIR /app
COPY nlu_data/ /app/nlu_data/
# Starts Rasa with skops imported before TensorFlow (a 16 s model load becomes about 10 s),
# with the project's tracker store and input channel next to it (they mask texts with the
# gateway's stdlib-only redaction module).
COPY bot/nlu/rasa_launcher.py bot/nlu/rasa_channel.py bot/nlu/rasa_tracker_store.py /app/bot/nlu/
COPY bot/core/redaction.py /app/bot/core/redaction.py

RUN rasa train --domain nlu_data/domain --config nlu_data/config.yml --data nlu_data/data \
        --out /app/models --fixed-model-name triage

# Custom actions are served by the gateway container; dialogue trackers are kept in the volume
# at /app/var; the gateway sends its turns to the project's channel (rasa_channel.py).
RUN printf 'action_endpoint:\n  url: "http://gateway:5055/webhook"\n  enable_selective_domain: true\ntracker_store:\n  type: rasa_tracker_store.TriageTrackerStore\n  db: /app/var/trackers.db\n' > /app/endpoints.yml \
    && printf 'rasa_channel.TriageChannel:\nrest:\n' > /app/credentials.yml

EXPOSE 5005

CMD ["python", "/app/bot/nlu/rasa_launcher.py", "run", "--enable-api", "--port", "5005", "--interface", "0.0.0.0", \
     "--endpoints", "/app/endpoints.yml", "--credentials", "/app/credentials.yml", "--model", "/app/models"]
