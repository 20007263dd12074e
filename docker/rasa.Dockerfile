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
RUN rasa train --domain nlu_data/domain --config nlu_data/config.yml --data nlu_data/data \
        --out /app/models --fixed-model-name triage

# The project's code that runs inside Rasa (triage_rasa: launcher, input channel, tracker store)
# and the masking it shares with the gateway (triage_pii), installed as a package after Rasa
# (and after training, which does not need it, so changing it does not retrain the model).
COPY rasa_side/ /tmp/rasa_side/
RUN pip install --no-cache-dir /tmp/rasa_side && rm -rf /tmp/rasa_side

# Custom actions are served by the gateway container; dialogue trackers are kept in the volume
# at /app/var; the gateway sends its turns to the project's channel (triage_rasa.channel).
RUN printf 'action_endpoint:\n  url: "http://gateway:5055/webhook"\n  enable_selective_domain: true\ntracker_store:\n  type: triage_rasa.tracker_store.TriageTrackerStore\n  db: /app/var/trackers.db\n' > /app/endpoints.yml \
    && printf 'triage_rasa.channel.TriageChannel:\nrest:\n' > /app/credentials.yml

EXPOSE 5005

# The launcher starts Rasa with skops imported before TensorFlow (a 16 s model load becomes about
# 10 s) and the project's tracker store and input channel imported before Rasa needs them.
CMD ["python", "-m", "triage_rasa.launcher", "run", "--enable-api", "--port", "5005", "--interface", "0.0.0.0", \
     "--endpoints", "/app/endpoints.yml", "--credentials", "/app/credentials.yml", "--model", "/app/models"]
