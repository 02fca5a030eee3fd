# The callpulse image: one image for `callpulse worker`, `callpulse monitor` and `callpulse simulate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# .dockerignore keeps the venv, tests and caches out of the build context.
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home callpulse \
    && mkdir -p /var/lib/callpulse \
    && chown callpulse /var/lib/callpulse

USER callpulse
# The worker keeps Faust's local data directory under the working directory, so it must be writable.
WORKDIR /var/lib/callpulse
# 8700: monitor (HTTP, websocket, /metrics); 6066: worker web server (/metrics)
EXPOSE 8700 6066
ENTRYPOINT ["callpulse"]
CMD ["--help"]
