# syntax=docker/dockerfile:1
# Build stage: the virtualenv, with GraphiQL's pinned assets fetched by npm.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gptmini_graphql ./gptmini_graphql
RUN pip install --no-cache-dir .
# From /, so `-m` finds the installed package and fills its static folder.
RUN cd / && python -m gptmini_graphql.graphiql.fetch

# Runtime stage: the virtualenv only, run by an unprivileged user.
FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000
USER app
WORKDIR /home/app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# The same command as `make run`.
CMD ["python", "-m", "gptmini_graphql", "serve"]
