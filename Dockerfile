# The callpulse image: one image for `callpulse worker`, `callpulse monitor` and `callpulse simulate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --no-create-home callpulse \
    && mkdir -p /var/lib/callpulse \
    && chown callpulse /var/lib/callpulse

WORKDIR /src
# Dependencies first, at the versions pinned in constraints.txt (the same pins CI installs): a change to
# the code reuses this layer instead of reinstalling everything. The list itself is pyproject.toml's.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# Then the code (.dockerignore keeps the venv, tests and caches out of the build context).
COPY README.md ./
COPY callpulse ./callpulse
COPY streams ./streams
COPY monitor ./monitor
RUN pip install --no-deps . && rm -rf build

USER callpulse
# The worker keeps Faust's local data directory under the working directory, so it must be writable.
WORKDIR /var/lib/callpulse
# 8700: monitor (HTTP, websocket, /metrics); 6066: worker web server (/healthz, /metrics)
EXPOSE 8700 6066
ENTRYPOINT ["callpulse"]
CMD ["--help"]
