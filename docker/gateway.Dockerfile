# The gateway: web/chat API, SIP voice front end and the Rasa custom-action server.
# Build from the repository root: docker build -f docker/gateway.Dockerfile .
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TRIAGE_DATA_DIR=/data \
    TRIAGE_NLU_DATA_DIR=/app/nlu_data

WORKDIR /app
COPY pyproject.toml /app/
COPY bot/ /app/bot/
COPY voice/ /app/voice/
# rasa_side/ for triage_pii, the masking the gateway shares with Rasa's tracker store (the Rasa-side
# code in it is never imported here); it has no dependencies of its own.
COPY rasa_side/ /app/rasa_side/
RUN pip install --no-cache-dir --no-deps ./rasa_side && pip install --no-cache-dir .
# the sample domain pack (bot/domains/energy) is installed with the package; its Rasa data is
# the repository's nlu_data/, copied here and named by TRIAGE_NLU_DATA_DIR
COPY nlu_data/ /app/nlu_data/

VOLUME /data
# 8080 HTTP, 5060/udp SIP, 5055 custom-action webhook (for the rasa container only).
EXPOSE 8080 5060/udp 5055

CMD ["triage", "serve", "--http-host", "0.0.0.0"]
