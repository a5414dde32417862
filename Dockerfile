# bp-stream producer and consumer image (used by `docker compose --profile app up`, see docker/).
# The command is chosen by the compose service: python -m producer.producer ... / python -m consumer.consumer ...
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# The risk model is not committed (ml/artifacts/ is ignored): train it unless the build context has one.
# About 10 s; deterministic (seeded simulation).
RUN [ -f ml/artifacts/bp_logreg.joblib ] || python -m ml.train_model --output ml/artifacts/bp_logreg.joblib --quiet

# Unprivileged user; data/ holds the archive of normal readings (data/normal) and is a volume in compose.
RUN useradd --create-home --uid 10001 bp \
    && mkdir -p /app/data/normal \
    && chown -R bp /app/data
USER bp

CMD ["python", "-m", "consumer.consumer", "--help"]
